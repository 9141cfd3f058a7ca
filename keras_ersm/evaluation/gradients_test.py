import keras
import numpy as np
import pytest

import keras_ersm
from keras_ersm.evaluation import _test_utils, gradients


def test_class_gradients_match_closed_form():
    # f(x) = x @ W, so d(sum_b f(x)[b, c_b]) / dx = W[:, c_b].
    weights = np.arange(6, dtype="float32").reshape(3, 2)
    x = np.ones((2, 3), "float32")
    grads = gradients.class_gradients(
        lambda v: keras.ops.matmul(v, weights), x, np.array([0, 1])
    )
    np.testing.assert_allclose(grads, np.stack([weights[:, 0], weights[:, 1]]))


def test_grad_cam_matches_manual_formula():
    keras.utils.set_random_seed(1)
    model = _test_utils.tiny_model()
    x, _, _ = _test_utils.synthetic_data(num=4)
    cam = keras_ersm.evaluation.grad_cam(model, x, classes=[0, 1, 0, 1])
    assert cam.shape == (4, 16, 16) and cam.dtype == np.float32
    # GAP -> Dense: dS/dA_c = W[c, class] / (H W), constant over space.
    masked = keras.ops.convert_to_numpy(
        model.get_layer("mask")(model.get_layer("conv")(x))
    )
    kernel = keras.ops.convert_to_numpy(model.get_layer("dense").kernel)
    weights = kernel[:, [0, 1, 0, 1]].T / 256.0
    expected = np.maximum((masked * weights[:, None, None, :]).sum(-1), 0)
    np.testing.assert_allclose(cam, expected, rtol=1e-4, atol=1e-7)


def test_grad_cam_at_a_mask_is_the_keep_map_times_the_class_map_of_its_input():
    # The documented identity: with GAP -> Dense after the mask, Grad-CAM at
    # the mask's output is keep x CAM (the class activation map of the mask's
    # input), so it is never independent of the keep map.
    keras.utils.set_random_seed(2)
    model = _test_utils.tiny_model(patch_size=1)
    model.get_layer("mask").kernel.assign(np.random.randn(8, 1).astype("float32"))
    x, _, _ = _test_utils.synthetic_data(num=4)
    classes = np.array([1, 0, 1, 1])
    features = keras.ops.convert_to_numpy(model.get_layer("conv")(x))
    kernel = keras.ops.convert_to_numpy(model.get_layer("dense").kernel)
    cam = np.maximum(np.einsum("bhwc,cb->bhw", features, kernel[:, classes]), 0)
    keep = keras_ersm.models.keep_maps(model, x)["mask"]
    at_mask = keras_ersm.evaluation.grad_cam(model, x, classes=classes)
    scale = at_mask.max(axis=(1, 2)) / (keep * cam).max(axis=(1, 2))
    np.testing.assert_allclose(
        at_mask, scale[:, None, None] * keep * cam, rtol=1e-4, atol=1e-7
    )
    # The keep map is not flat, so the identity is not trivial.
    assert keep.max() > 1.5 * keep.min()


def test_grad_cam_any_layer_and_nested():
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
    h = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="c2")(h)
    backbone = keras.Model(inputs, h, name="backbone")
    outer = keras.Input((16, 16, 3))
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(backbone(outer)))
    model = keras.Model(outer, out)
    x = np.random.default_rng(0).random((3, 16, 16, 3)).astype("float32")
    assert keras_ersm.evaluation.grad_cam(model, x, layer="c1").shape == (3, 16, 16)
    assert keras_ersm.evaluation.grad_cam(model, x, layer="c2").shape == (3, 8, 8)
    with pytest.raises(ValueError, match="layer='missing'"):
        keras_ersm.evaluation.grad_cam(model, x, layer="missing")
    with pytest.raises(ValueError, match="Received: layer=None"):
        keras_ersm.evaluation.grad_cam(model, x)


def test_grad_cam_skips_an_empty_batch():
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, out)
    x = np.random.default_rng(0).random((4, 8, 8, 3)).astype("float32")
    batches = iter([x[:2], x[:0], x[2:]])  # an iterable of batches
    cam = keras_ersm.evaluation.grad_cam(
        model, batches, layer="c1", classes=[0, 1, 2, 0]
    )
    expected = keras_ersm.evaluation.grad_cam(
        model, x, layer="c1", classes=[0, 1, 2, 0]
    )
    np.testing.assert_allclose(cam, expected, rtol=1e-5, atol=1e-6)
