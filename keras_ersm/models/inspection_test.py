"""Tests of keep_maps and energy_terms."""

import keras
import numpy as np
import pytest

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
    assert set(terms) == {"scores", "keep", "redundancy", "energy"}
    assert all(v.shape == (3, 8, 8) for v in terms.values())
    assert np.all((terms["keep"] >= 0) & (terms["keep"] <= 1))


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
