"""Hostile and careless calls to the evaluation functions (issue 15).

Each test guards one defect of the red-team pass and runs once per backend.
"""

import keras
import numpy as np
import pytest

import keras_ersm
from keras_ersm.evaluation import _test_utils

# --- item 3: one-output heads, logits or probabilities -----------------------


def _one_output_classifier(activation):
    """A classifier that is always right on `_binary_data`: its output is
    +-0.1 (a logit, or sigmoid(+-0.1) with `activation="sigmoid"`)."""
    inputs = keras.Input((8, 8, 1))
    features = keras.layers.Conv2D(
        1, 1, use_bias=False, kernel_initializer="ones", name="conv"
    )(inputs)
    backbone = keras.Model(inputs, features, name="backbone")
    model = keras_ersm.models.build_classifier(
        backbone, num_classes=1, activation=activation, patch_size=2
    )
    head = model.get_layer("predictions")
    head.set_weights([np.full((1, 1), 0.1, "float32"), np.zeros((1,), "float32")])
    return model


def _binary_data():
    signs = np.array([1.0, -1.0] * 4, "float32")
    x = np.ones((8, 8, 8, 1), "float32") * signs[:, None, None, None]
    return x, (signs > 0).astype("int64")


@pytest.mark.parametrize("activation", [None, "sigmoid"])
def test_one_output_head_is_scored_as_logits_or_probabilities(activation):
    model = _one_output_classifier(activation)
    x, y = _binary_data()
    occlusion = keras_ersm.evaluation.occlusion_robustness(
        model, (x, y), patch_sizes=(4,), fractions=(0.1,), hide_sizes=()
    )
    assert occlusion.clean_accuracy == 100.0
    deletion = keras_ersm.evaluation.deletion_curve(
        model, (x, y), orders=("random", "grad_cam"), steps=2
    )
    assert deletion.accuracy["random"][0] == 100.0
    assert deletion.accuracy["grad_cam"][0] == 100.0
    # One-hot style (N, 1) float labels are read the same way.
    occlusion = keras_ersm.evaluation.occlusion_robustness(
        model,
        (x, y[:, None].astype("float32")),
        patch_sizes=(4,),
        fractions=(0.1,),
        hide_sizes=(),
    )
    assert occlusion.clean_accuracy == 100.0


# --- item 5: grad_cam with out-of-range classes ------------------------------


@pytest.mark.parametrize("classes", [[0, 2], [-1, 0], [5, 1]])
def test_grad_cam_rejects_out_of_range_classes(classes):
    model = _test_utils.tiny_model()
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"`classes`.*\[0, 2\).*Received: classes="):
        keras_ersm.evaluation.grad_cam(model, x, classes=classes)


def test_grad_cam_class_checks():
    model = _test_utils.tiny_model()
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype("float32")
    assert keras_ersm.evaluation.grad_cam(model, x, classes=np.int64([1, 0])).shape == (
        2,
        16,
        16,
    )
    with pytest.raises(TypeError, match="classes="):
        keras_ersm.evaluation.grad_cam(model, x, classes=["a", "b"])
    with pytest.raises(ValueError, match="one class per image"):
        keras_ersm.evaluation.grad_cam(model, x, classes=[1, 0, 1])


# --- item 9: evaluation data checks ------------------------------------------


def _occlusion(model, data):
    return keras_ersm.evaluation.occlusion_robustness(
        model, data, patch_sizes=(4,), fractions=(0.1,), hide_sizes=()
    )


@pytest.mark.parametrize("num_labels", [5, 9])
def test_label_count_must_match_the_images(num_labels):
    model = _test_utils.tiny_model()
    x, y, _ = _test_utils.synthetic_data(num=8)
    y = np.resize(y, num_labels)
    with pytest.raises(ValueError, match="as many labels as images.*8 images"):
        _occlusion(model, (x, y))
    with pytest.raises(ValueError, match="as many labels as images"):
        keras_ersm.evaluation.deletion_curve(model, (x, y), steps=2)
    # Batches of a dataset are checked too.
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    with pytest.raises(ValueError, match="as many labels as images"):
        _occlusion(model, batches)


def test_unbatched_dataset_is_a_clear_error():
    tf = pytest.importorskip("tensorflow")
    model = _test_utils.tiny_model()
    x, y, _ = _test_utils.synthetic_data(num=4)
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    for run in (
        lambda: _occlusion(model, unbatched),
        lambda: keras_ersm.evaluation.deletion_curve(model, unbatched, steps=2),
        lambda: keras_ersm.evaluation.mask_statistics(model, unbatched),
        lambda: keras_ersm.evaluation.grad_cam(
            model, tf.data.Dataset.from_tensor_slices(x)
        ),
    ):
        with pytest.raises(ValueError, match=r"single examples.*\.batch\("):
            run()
    assert _occlusion(model, unbatched.batch(2)).num_images == 4


def test_grad_cam_on_zero_images_is_a_clear_error():
    model = _test_utils.tiny_model()
    with pytest.raises(ValueError, match="at least one image"):
        keras_ersm.evaluation.grad_cam(model, np.zeros((0, 16, 16, 3), "float32"))
