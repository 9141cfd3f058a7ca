"""Tests of keep_maps and energy_terms."""

import keras
import numpy as np
import pytest

from keras_ersm import EnergyMask
from keras_ersm.models import (
    build_classifier,
    energy_mask_layers,
    energy_terms,
    insert_energy_masks,
    keep_maps,
)
from keras_ersm.testing.test_case import images, small_model


def test_keep_maps_match_layer_terms():
    model = insert_energy_masks(
        small_model(), {"relu1": {"patch_size": 2}, "output": None}
    )
    x = images(5)
    maps = keep_maps(model, x, batch_size=2)
    assert list(maps) == ["relu1_energy_mask", "relu2_energy_mask"]
    assert maps["relu1_energy_mask"].shape == (5, 8, 8)
    assert maps["relu2_energy_mask"].shape == (5, 8, 8)
    assert maps["relu1_energy_mask"].dtype == np.float32
    features = keras.Model(model.input, model.get_layer("relu1").output)(x)
    mask = model.get_layer("relu1_energy_mask")
    expected = keras.ops.convert_to_numpy(mask.energy_terms(features)["keep"])
    np.testing.assert_allclose(maps["relu1_energy_mask"], expected, rtol=1e-5)
    # Batching does not change the result.
    one = keep_maps(model, x, layer="relu1_energy_mask", batch_size=32)
    np.testing.assert_allclose(one, maps["relu1_energy_mask"], rtol=1e-5)
    same = keep_maps(model, x, layer=mask)
    np.testing.assert_allclose(same, one, rtol=1e-6)


def test_energy_terms_all_terms():
    model = build_classifier(small_model(), 3)
    terms = energy_terms(model, images(3), layer="relu2_energy_mask")
    assert set(terms) == {"scores", "keep", "redundancy", "energy", "norms"}
    assert all(v.shape == (3, 8, 8) for v in terms.values())
    assert np.all((terms["keep"] >= 0) & (terms["keep"] <= 1))


def test_energy_terms_norms_are_the_token_norms_of_the_masks_input():
    model = build_classifier(small_model(), 3)
    x = images(3)
    terms = energy_terms(model, x, layer="relu2_energy_mask")
    mask = model.get_layer("relu2_energy_mask")
    features = keras.Model(model.inputs, mask.input).predict(x, verbose=0)
    np.testing.assert_allclose(
        terms["norms"], np.linalg.norm(features, axis=-1), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_energy_terms_norms_of_padded_patches(data_format):
    """patch_size=2 with padding="same" on an odd size: each norm is that of
    the zero-padded 2x2 patch, the tokens the keep is computed on."""
    shape = (7, 7, 3) if data_format == "channels_last" else (3, 7, 7)
    inputs = keras.Input(shape)
    outputs = EnergyMask(
        patch_size=2, padding="same", data_format=data_format, name="mask"
    )(inputs)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")
    terms = energy_terms(model, x, layer="mask")
    hwc = x if data_format == "channels_last" else x.transpose(0, 2, 3, 1)
    padded = np.pad(hwc, ((0, 0), (0, 1), (0, 1), (0, 0)))
    patches = padded.reshape(2, 4, 2, 4, 2, 3)
    expected = np.sqrt((patches**2).sum(axis=(2, 4, 5)))
    assert terms["norms"].shape == terms["keep"].shape == (2, 4, 4)
    np.testing.assert_allclose(terms["norms"], expected, rtol=1e-5, atol=1e-6)


def test_keep_maps_through_nested_model():
    backbone = small_model("backbone")
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(2.0, name="scale")(inputs)
    outer = keras.Model(inputs, backbone(x))
    patched = insert_energy_masks(outer, "relu1", recursive=True)
    x = images(3)
    maps = keep_maps(patched, x, layer="relu1_energy_mask")
    nested = patched.get_layer("backbone")
    features = keras.Model(nested.input, nested.get_layer("relu1").output)(x * 2)
    mask = energy_mask_layers(patched)[0]
    expected = keras.ops.convert_to_numpy(mask.energy_terms(features)["keep"])
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6)


def test_errors():
    model = insert_energy_masks(small_model(), "relu1")
    with pytest.raises(ValueError, match=r"\['relu1_energy_mask'\].*layer='nope'"):
        keep_maps(model, images(), layer="nope")
    with pytest.raises(TypeError, match="layer=3"):
        keep_maps(model, images(), layer=3)
    with pytest.raises(ValueError, match="batch_size=0"):
        keep_maps(model, images(), batch_size=0)
    with pytest.raises(ValueError, match="has none"):
        keep_maps(small_model(), images())
    # Data errors name the parameter, `x`, not `data`.
    with pytest.raises(ValueError, match=r"argument `x`.*Received: x='nope'"):
        keep_maps(model, "nope")
    with pytest.raises(ValueError, match=r"argument `x`.*single examples"):
        keep_maps(model, [images(2)[0]])


def _sequential_classifier(nested):
    """A Sequential model with an EnergyMask, inside a Sequential backbone
    (`nested=True`) or directly."""
    body = [
        keras.layers.Conv2D(4, 3, padding="same", name="conv"),
        EnergyMask(patch_size=2, name="mask"),
    ]
    if nested:
        body = [keras.Sequential([keras.Input((16, 16, 3)), *body], name="backbone")]
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            *body,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )


def _expected_keep(model, x):
    conv = [layer for layer in _all_layers(model) if layer.name == "conv"][0]
    mask = energy_mask_layers(model)[0]
    return keras.ops.convert_to_numpy(mask.energy_terms(conv(x))["keep"])


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


@pytest.mark.parametrize("nested", [False, True])
def test_keep_maps_of_sequential_models(nested):
    # A mask inside a nested Sequential backbone was not reachable before.
    model = _sequential_classifier(nested)
    x = images(3)
    maps = keep_maps(model, x)
    assert list(maps) == ["mask"]
    np.testing.assert_allclose(
        maps["mask"], _expected_keep(model, x), rtol=1e-5, atol=1e-6
    )
    one = keep_maps(model, x, layer="mask", batch_size=2)
    assert one.shape == (3, 8, 8) and one.dtype == np.float32
    np.testing.assert_allclose(one, maps["mask"], rtol=1e-5, atol=1e-6)


def test_keep_maps_of_datasets():
    model = _sequential_classifier(nested=False)
    x = images(5)
    expected = keep_maps(model, x, layer="mask")
    y = np.arange(5)
    # `(x, y)` arrays: the labels are ignored.
    np.testing.assert_allclose(keep_maps(model, (x, y), layer="mask"), expected)

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return x[2 * index : 2 * index + 2], y[2 * index : 2 * index + 2]

    np.testing.assert_allclose(
        keep_maps(model, Batches(), layer="mask"), expected, rtol=1e-5, atol=1e-6
    )
    terms = energy_terms(model, Batches(), layer="mask", verbose=2)
    np.testing.assert_allclose(terms["keep"], expected, rtol=1e-5, atol=1e-6)


def test_keep_maps_of_a_tf_data_dataset():
    tf = pytest.importorskip("tensorflow")
    model = _sequential_classifier(nested=False)
    x = images(5)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.arange(5))).batch(2)
    np.testing.assert_allclose(
        keep_maps(model, dataset, layer="mask"),
        keep_maps(model, x, layer="mask"),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match=r"argument `x`.*single examples.*\.batch\("):
        keep_maps(model, dataset.unbatch())


def test_keep_maps_of_a_subclassed_model_is_a_clear_error():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.mask = EnergyMask()

        def call(self, x):
            return self.mask(x)

    model = Subclassed()
    model(images(1))
    with pytest.raises(ValueError, match="subclassed"):
        keep_maps(model, images(1))


def test_keep_maps_follow_the_mask_weights_after_the_first_call():
    # The probe model is built and compiled once per model; the mask's
    # weights must be read at every call, not frozen at the first one (on
    # JAX an untracked variable becomes a constant of the compiled predict).
    model = build_classifier(small_model(), 3)
    mask = energy_mask_layers(model)[0]
    x = images(4)
    first = keep_maps(model, x, layer=mask)
    mask.bias.assign(3.0)
    second = keep_maps(model, x, layer=mask)
    features = keras.Model(model.input, model.get_layer("relu2").output)(x)
    expected = keras.ops.convert_to_numpy(mask.energy_terms(features)["keep"])
    np.testing.assert_allclose(second, expected, rtol=1e-5, atol=1e-7)
    assert np.mean(second) < 0.5 * np.mean(first)
    # ... and after training, which updates them in place.
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.zeros(4, "int32"), epochs=1, verbose=0)
    mask.bias.assign(-3.0)
    third = keep_maps(model, x, layer=mask)
    assert np.mean(third) > 0.9
