import json

import keras
import numpy as np
import pytest

import keras_ersm
from keras_ersm.evaluation import _test_utils, occlusion
from keras_ersm.testing import test_case


def test_cutout_and_hide_and_seek_masks():
    rng = np.random.default_rng(0)
    masks = occlusion.cutout_masks(rng, 4, 16, 16, 4, 0.25)
    assert masks.shape == (4, 16, 16)
    # 4 squares of 16 pixels, overlaps allowed.
    assert np.all(masks.sum(axis=(1, 2)) <= 64) and np.all(masks.sum(axis=(1, 2)) >= 16)
    grid = occlusion.hide_and_seek_masks(rng, 2, 16, 16, 8, 0.5)
    blocks = grid.reshape(2, 2, 8, 2, 8)
    assert np.all(blocks.min(axis=(2, 4)) == blocks.max(axis=(2, 4)))
    assert not occlusion.cutout_masks(rng, 1, 8, 8, 4, 0.0).any()


def test_occlusion_robustness_baseline_and_objects():
    x, y, objects = _test_utils.synthetic_data(num=24)
    # A baseline without a mask layer: "is the object's colour there?".
    inputs = keras.Input((16, 16, 3))
    pooled = keras.layers.GlobalMaxPooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t[:, :2])(pooled))
    settings = dict(
        patch_sizes=(4,),
        fractions=(0.25,),
        hide_sizes=(8,),
        object_masks=objects,
        fill="zero",
        seed=1,
    )
    result = keras_ersm.evaluation.occlusion_robustness(model, (x, y), **settings)
    assert result.clean_accuracy == 100.0
    assert set(result.accuracy) == {
        "cutout_4px_25pct",
        "hide_and_seek_8px_p50",
        "object",
        "background",
    }
    # Background occlusion keeps the object; object occlusion removes it.
    assert result.accuracy["background"] == 100.0
    assert result.accuracy["object"] < 75.0
    assert result.covered["object"] == pytest.approx(objects.mean())
    again = keras_ersm.evaluation.occlusion_robustness(model, (x, y), **settings)
    assert again.to_dict() == result.to_dict()
    json.dumps(result.to_dict())
    test_case.check_figure(result.plot())
    for fill in ("mean", "noise"):
        other = keras_ersm.evaluation.occlusion_robustness(
            model, (x, y), patch_sizes=(), hide_sizes=(4,), fill=fill
        )
        assert list(other.accuracy) == ["hide_and_seek_4px_p50"]


def test_errors():
    x, y, objects = _test_utils.synthetic_data(num=8)
    model = _test_utils.tiny_model()
    with pytest.raises(ValueError, match="object_masks"):
        keras_ersm.evaluation.occlusion_robustness(
            model, (x, y), object_masks=objects[:, :8]
        )
    with pytest.raises(ValueError, match="object_masks"):
        keras_ersm.evaluation.occlusion_robustness(
            model, (x[:4], y[:4]), object_masks=objects
        )
    with pytest.raises(ValueError, match="without labels"):
        keras_ersm.evaluation.occlusion_robustness(model, x)
    with pytest.raises(ValueError, match="fill"):
        keras_ersm.evaluation.occlusion_robustness(model, (x, y), fill="blur")
    with pytest.raises(ValueError, match="patch_sizes"):
        keras_ersm.evaluation.occlusion_robustness(model, (x, y), patch_sizes=(0,))
    with pytest.raises(ValueError, match="fractions"):
        keras_ersm.evaluation.occlusion_robustness(model, (x, y), fractions=(2.0,))
