import keras
import numpy as np
import pytest

import keras_ersm
from keras_ersm.evaluation import _test_utils, statistics
from keras_ersm.testing import test_case


def test_keep_statistics_known_values():
    keep = np.array([[[1.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]])
    values, per_image = statistics.keep_statistics(keep)
    np.testing.assert_allclose(per_image, [1.0, 0.25])
    assert values["mean_keep"] == pytest.approx(0.625)
    assert values["active_fraction"] == pytest.approx(0.625)
    # Uniform map: entropy 1; one token: entropy 0.
    assert values["entropy"] == pytest.approx(0.5)
    assert values["spread"] == pytest.approx(0.375)


def test_mask_statistics_matches_layer():
    keras.utils.set_random_seed(0)
    model = _test_utils.tiny_model()
    x, y, _ = _test_utils.synthetic_data(num=10)
    result = keras_ersm.evaluation.mask_statistics(model, x, batch_size=4)
    keep = keras.ops.convert_to_numpy(
        model.get_layer("mask").energy_terms(model.get_layer("conv")(x))["keep"]
    )
    assert result["mean_keep"] == pytest.approx(float(keep.mean()), rel=1e-5)
    assert result.per_image_mean.shape == (10,)
    labelled = keras_ersm.evaluation.mask_statistics(model, (x, y))
    assert labelled["mean_keep"] == pytest.approx(result["mean_keep"], rel=1e-5)
    assert set(result.to_dict()) >= {
        "mean_keep",
        "active_fraction",
        "entropy",
        "spread",
    }
    test_case.check_figure(result.plot())


def test_data_errors_name_the_data_argument():
    # mask_statistics reads the keep maps through models.keep_maps, whose
    # parameter is `x`: the error must still name `data`, this function's.
    model = _test_utils.tiny_model()
    empty = np.zeros((0, 16, 16, 3), "float32")
    with pytest.raises(ValueError, match=r"argument `data`.*Received: data="):
        keras_ersm.evaluation.mask_statistics(model, (empty, np.zeros(0)))
    with pytest.raises(ValueError, match=r"argument `images`.*Received: images="):
        keras_ersm.evaluation.mask_localization(
            model, iter([empty]), np.ones((0, 16, 16)), grad_cam=False
        )
