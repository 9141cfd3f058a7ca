"""Tests of build_classifier on a small plain backbone."""

import keras
import numpy as np
import pytest

from keras_ersm.layers.energy_mask import EnergyMask
from keras_ersm.models import build_classifier, energy_mask_layers
from keras_ersm.testing.test_case import (
    PASS_THROUGH,
    check_save_and_load,
    images,
    small_model,
)


def compile_model(model):
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def labels(n=4):
    return np.arange(n) % 3


def test_recipe_structure_and_baseline():
    backbone = small_model()
    model = build_classifier(backbone, 3)
    names = [layer.name for layer in model.layers]
    assert names[-3:] == ["relu2_energy_mask", "avg_pool", "predictions"]
    assert model.name == "small_ersm_classifier"
    assert model.output.shape == (None, 3)
    baseline = build_classifier(backbone, 3, mask_at=None)
    assert not energy_mask_layers(baseline)
    assert [layer.name for layer in baseline.layers][-2:] == [
        "avg_pool",
        "predictions",
    ]
    assert baseline.name == "small_classifier"
    # Same architecture apart from the mask.
    assert len(baseline.layers) == len(model.layers) - 1
    assert baseline.count_params() == model.count_params() - 6 - 1


def test_masks_inside_backbone_and_kwargs():
    model = build_classifier(
        small_model(),
        2,
        mask_at={"relu1": {"patch_size": 2}, "output": None},
        temperature=0.5,
        dropout=0.2,
        activation="softmax",
    )
    masks = energy_mask_layers(model)
    assert [m.name for m in masks] == ["relu1_energy_mask", "relu2_energy_mask"]
    assert [m.patch_size for m in masks] == [2, 1]
    assert all(m.temperature == 0.5 for m in masks)
    assert model.get_layer("head_dropout").rate == 0.2
    out = keras.ops.convert_to_numpy(model(images()))
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)


def test_frozen_backbone_stays_frozen_while_mask_and_head_train():
    backbone = small_model()
    model = compile_model(build_classifier(backbone, 3))
    mask = energy_mask_layers(model)[0]
    frozen = [
        layer
        for layer in model.layers
        if layer.weights
        and not isinstance(layer, EnergyMask)
        and layer.name not in ("predictions",)
    ]
    assert frozen and all(not layer.trainable for layer in frozen)
    assert {w.name for w in model.trainable_weights} == {"kernel", "bias"}
    assert len(model.trainable_weights) == 4  # Mask kernel, bias; head.
    before = {id(ly): [w.copy() for w in ly.get_weights()] for ly in model.layers}
    model.fit(images(), labels(), epochs=1, verbose=0)
    for layer in frozen:  # Batch-norm moving statistics included.
        for a, b in zip(before[id(layer)], layer.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    for layer in (mask, model.get_layer("predictions")):
        assert any(
            not np.array_equal(a, b)
            for a, b in zip(before[id(layer)], layer.get_weights(), strict=True)
        )
    # The backbone passed in is untouched (flags and weights).
    assert all(layer.trainable for layer in backbone.layers)


def test_unfrozen_backbone_trains():
    model = compile_model(build_classifier(small_model(), 3, freeze_backbone=False))
    conv = model.get_layer("conv1")
    before = [w.copy() for w in conv.get_weights()]
    model.fit(images(), labels(), epochs=1, verbose=0)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(before, conv.get_weights(), strict=True)
    )


def test_pass_through_mask_matches_baseline_and_round_trips():
    backbone = small_model()
    x = images()
    baseline = build_classifier(backbone, 3, mask_at=None)
    model = build_classifier(
        backbone,
        3,
        **PASS_THROUGH,
    )
    model.get_layer("predictions").set_weights(
        baseline.get_layer("predictions").get_weights()
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)),
        keras.ops.convert_to_numpy(baseline(x)),
        rtol=1e-6,
        atol=1e-6,
    )
    # Outputs, losses and every layer's trainable flag, safe_mode=True.
    loaded = check_save_and_load(model, x)
    assert not loaded.get_layer("conv1").trainable


def test_sequential_backbone_error():
    backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="Invalid value for argument `backbone`"):
        build_classifier(backbone, 3)


def test_bad_arguments():
    backbone = small_model()
    with pytest.raises(ValueError, match="num_classes=0"):
        build_classifier(backbone, 0)
    # Wrong types raise TypeError (keras_ersm._validation's rule).
    with pytest.raises(TypeError, match="num_classes=True"):
        build_classifier(backbone, True)
    with pytest.raises(TypeError, match="freeze_backbone='yes'"):
        build_classifier(backbone, 3, freeze_backbone="yes")
    with pytest.raises(ValueError, match="dropout=nan"):
        build_classifier(backbone, 3, dropout=float("nan"))
    with pytest.raises(ValueError, match="dropout=1.0"):
        build_classifier(backbone, 3, dropout=1.0)
    with pytest.raises(ValueError, match="mask_at=None"):
        build_classifier(backbone, 3, mask_at=None, patch_size=2)
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        build_classifier(backbone, 3, mask_at="nope")
    inputs = keras.Input((8, 8, 3))
    flat = keras.Model(inputs, keras.layers.Flatten()(inputs))
    with pytest.raises(ValueError, match="include_top=False"):
        build_classifier(flat, 3)
