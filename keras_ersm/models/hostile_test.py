"""Hostile and careless calls to `keras_ersm.models` (issue 15).

Each test guards one defect of the red-team pass and runs once per backend.
"""

import keras
import numpy as np
import pytest

import keras_ersm
from keras_ersm.models import build_classifier

# --- item 4: channels_first backbones ----------------------------------------


def _channels_first_backbone():
    inputs = keras.Input((3, 8, 12))
    x = keras.layers.Conv2D(
        4, 3, padding="same", data_format="channels_first", name="conv"
    )(inputs)
    return keras.Model(inputs, x, name="cf_backbone")


def test_classifier_takes_the_data_format_from_a_channels_first_backbone():
    model = build_classifier(_channels_first_backbone(), 2, patch_size=2)
    (mask,) = keras_ersm.models.energy_mask_layers(model)
    assert mask.data_format == "channels_first"
    assert tuple(mask.kernel.shape) == (2 * 2 * 4, 1)
    assert tuple(model.get_layer("predictions").kernel.shape) == (4, 2)
    x = np.random.default_rng(0).random((2, 3, 8, 12)).astype("float32")
    assert tuple(model(x).shape) == (2, 2)
    baseline = build_classifier(_channels_first_backbone(), 2, mask_at=None)
    assert tuple(baseline.get_layer("predictions").kernel.shape) == (4, 2)


def test_classifier_rejects_a_backbone_of_mixed_data_formats():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(data_format="channels_first", name="pool")(x)
    backbone = keras.Model(inputs, x)
    with pytest.raises(ValueError, match="mix.*data_format="):
        build_classifier(backbone, 2)
    # An explicit data_format settles it.
    model = build_classifier(backbone, 2, data_format="channels_last")
    assert keras_ersm.models.energy_mask_layers(model)[0].data_format == (
        "channels_last"
    )


# --- item 9: keep_maps on Sequential models and on zero images ---------------


def _sequential():
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same", name="conv"),
            keras_ersm.EnergyMask(patch_size=2, name="mask"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )


def test_keep_maps_accepts_sequential_models():
    model = _sequential()
    x = np.random.default_rng(0).random((3, 8, 8, 3)).astype("float32")
    maps = keras_ersm.models.keep_maps(model, x, layer="mask")
    assert maps.shape == (3, 4, 4)
    features = model.get_layer("conv")(x)
    expected = keras.ops.convert_to_numpy(
        model.get_layer("mask").energy_terms(features)["keep"]
    )
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6)
    unbuilt = keras.Sequential([keras_ersm.EnergyMask(name="m")])
    with pytest.raises(ValueError, match="keras.Input"):
        keras_ersm.models.keep_maps(unbuilt, x)


def test_keep_maps_on_zero_images_is_a_clear_error():
    model = _sequential()
    with pytest.raises(ValueError, match="at least one image"):
        keras_ersm.models.keep_maps(model, np.zeros((0, 8, 8, 3), "float32"))
    with pytest.raises(TypeError, match="batch_size"):
        keras_ersm.models.keep_maps(model, np.zeros((1, 8, 8, 3)), batch_size=2.0)


# --- item 11: naming the input layer in insert_energy_masks(at=...) ----------


def test_inserting_at_the_input_says_so():
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    model = keras.Model(inputs, x)
    with pytest.raises(ValueError, match="cannot be inserted at an input") as info:
        keras_ersm.models.insert_energy_masks(model, "image")
    assert "unknown layer" not in str(info.value)
    assert "Received: at='image'" in str(info.value)
