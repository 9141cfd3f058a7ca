import json

import keras
import numpy as np
import pytest

import keras_ersm
from keras_ersm.evaluation import _test_utils, localization
from keras_ersm.testing import test_case


def test_scores_of_known_maps():
    objects = np.zeros((2, 4, 4), bool)
    objects[:, :2, :2] = True
    perfect = np.zeros((2, 2, 2))
    perfect[:, 0, 0] = 1.0
    scores = localization.localization_scores(perfect, objects)
    assert scores == {"mass_inside": 1.0, "pointing_game": 1.0, "iou": 1.0}
    wrong = np.zeros((2, 2, 2))
    wrong[:, 1, 1] = 1.0
    scores = localization.localization_scores(wrong, objects)
    assert scores == {"mass_inside": 0.0, "pointing_game": 0.0, "iou": 0.0}
    uniform = localization.localization_scores(np.full((2, 2, 2), 0.4), objects)
    assert uniform["mass_inside"] == pytest.approx(0.25)


def test_mask_localization():
    keras.utils.set_random_seed(0)
    model = _test_utils.tiny_model()
    x, _, objects = _test_utils.synthetic_data(num=6)
    result = keras_ersm.evaluation.mask_localization(model, x, objects[..., None])
    assert set(result.scores) == {"keep", "kept", "grad_cam"}
    for values in result.scores.values():
        assert set(values) == set(localization.METRICS)
        assert all(0.0 <= v <= 1.0 for v in values.values())
    assert result.object_fraction == pytest.approx(objects.mean())
    json.dumps(result.to_dict())
    test_case.check_figure(result.plot())
    only_keep = keras_ersm.evaluation.mask_localization(
        model, x, objects, grad_cam=False
    )
    assert list(only_keep.scores) == ["keep", "kept"]


def test_kept_map_is_keep_times_token_norm():
    """The kept map scores `keep * ||x||` divided by its per-image peak."""
    keras.utils.set_random_seed(0)
    model = _test_utils.tiny_model()
    x, _, objects = _test_utils.synthetic_data(num=6)
    result = keras_ersm.evaluation.mask_localization(model, x, objects, grad_cam=False)
    terms = keras_ersm.models.energy_terms(model, x, layer="mask")
    kept = localization.normalise_peak(terms["keep"] * terms["norms"])
    expected = localization.localization_scores(kept, objects > 0)
    for metric, value in expected.items():
        assert result.scores["kept"][metric] == pytest.approx(value, rel=1e-5)
    keep_only = localization.localization_scores(terms["keep"], objects > 0)
    assert result.scores["kept"] != keep_only


def test_errors():
    model = _test_utils.tiny_model()
    x, _, objects = _test_utils.synthetic_data(num=4)
    with pytest.raises(ValueError, match="object_masks"):
        keras_ersm.evaluation.mask_localization(model, x, objects[:, :8, :8])
    with pytest.raises(ValueError, match="object_masks"):
        keras_ersm.evaluation.mask_localization(model, x, objects[:3])
    with pytest.raises(ValueError, match="layer='conv'"):
        keras_ersm.evaluation.mask_localization(model, x, objects, layer="conv")
