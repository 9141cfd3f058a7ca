"""`benchmarks/score_ceiling.py`: the oracle fits and the contrast-free
measures the docs quote (issue 13, "What the keep's form can localise")."""

import numpy as np
import pytest

from benchmarks import score_ceiling
from keras_ersm.testing.test_case import input_gradient


def test_object_share_is_each_tokens_fraction_of_object_pixels():
    masks = np.zeros((1, 4, 4))
    masks[0, :2, :2] = 1.0  # the top-left token, whole
    masks[0, 2, 2] = 1.0  # a quarter of the bottom-right token
    share = score_ceiling.object_share(masks, 2)
    np.testing.assert_allclose(share[0], [[1.0, 0.0], [0.0, 0.25]])


def test_auroc_is_one_for_a_map_that_ranks_the_object_first_and_half_for_a_flat_one():
    share = np.array([[[1.0, 0.0], [0.0, 0.5]]])
    assert score_ceiling.auroc(share, share) == 1.0
    assert score_ceiling.auroc(-share, share) == 0.0
    assert score_ceiling.auroc(np.ones_like(share), share) == 0.5


def test_the_oracle_recovers_a_direction_that_sets_the_object_share():
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(50, 4, 4, 6))
    direction = np.array([1.0, -2.0, 0.0, 0.5, 0.0, 0.0])
    share = tokens @ direction + 0.3
    fitted = score_ceiling.oracle_fit(tokens[:40], share[:40], tokens[40:])
    np.testing.assert_allclose(fitted, share[40:], atol=1e-3)


def test_unit_tokens_drop_the_norm_and_keep_empty_tokens_empty():
    tokens = np.zeros((1, 1, 2, 3))
    tokens[0, 0, 0] = [3.0, 0.0, 4.0]
    u = score_ceiling.unit(tokens)
    np.testing.assert_allclose(u[0, 0, 0], [0.6, 0.0, 0.8])
    np.testing.assert_array_equal(u[0, 0, 1], 0.0)
    np.testing.assert_allclose(score_ceiling.relative_norm(tokens)[0, 0, :, 0], [2, 0])


def test_relative_tokens_are_scale_free():
    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(2, 3, 3, 4))
    np.testing.assert_allclose(
        score_ceiling.relative_tokens(7.0 * tokens),
        score_ceiling.relative_tokens(tokens),
        rtol=1e-12,
    )


def test_the_relative_score_is_scale_free_and_its_gradient_finite_at_empty_tokens():
    import keras

    from benchmarks import _experimental

    mask = _experimental.ExperimentalMask(relative_score=True)
    x = np.random.default_rng(0).random((2, 4, 4, 8)).astype("float32")
    x[:, 0, 0] = 0.0  # an all-zero token, as ReLU features have
    mask.build(x.shape)
    mask.kernel.assign(np.random.default_rng(1).normal(size=mask.kernel.shape))
    keep = keras.ops.convert_to_numpy(mask.energy_terms(x)["keep"])
    keep5 = keras.ops.convert_to_numpy(mask.energy_terms(5.0 * x)["keep"])
    np.testing.assert_allclose(keep, keep5, atol=1e-6)
    # A stronger token scores higher: the score sees more than the direction.
    strong = x.copy()
    strong[:, 1, 1] *= 3.0
    scores = keras.ops.convert_to_numpy(mask.energy_terms(strong)["scores"])
    base = keras.ops.convert_to_numpy(mask.energy_terms(x)["scores"])
    assert not np.allclose(scores[:, 1, 1], base[:, 1, 1])
    grad = input_gradient(lambda v: keras.ops.sum(mask.energy_terms(v)["keep"]), x)
    assert np.isfinite(grad).all()


def test_the_pointing_fit_finds_a_planted_object_direction():
    rng = np.random.default_rng(0)
    n, grid, depth = 400, 4, 6
    tokens = rng.normal(size=(n, grid, grid, depth))
    share = np.zeros((n, grid, grid))
    where = rng.integers(0, grid * grid, size=n)
    for b, i in enumerate(where):
        share[b].flat[i] = 1.0
        tokens[b].reshape(-1, depth)[i, 0] += 3.0
    scores = score_ceiling.pointing_fit(tokens[:300], share[:300], tokens[300:])
    hits = scores.reshape(100, -1).argmax(axis=1) == where[300:]
    # Chance is 1/16; the planted channel alone gives about 0.85.
    assert hits.mean() > 0.7


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"energy_feature_gradient": 1.0}, "energy_feature_gradient=1.0"),
        ({"energy_kernel_gradient": 0.0}, "energy_kernel_gradient=0.0"),
        ({"context": True}, "context=True"),
        ({"norm_score": True}, "norm_score=True"),
    ],
)
def test_the_relative_score_refuses_what_it_does_not_support_by_value(kwargs, named):
    from benchmarks import _experimental

    with pytest.raises(ValueError, match=named):
        _experimental.ExperimentalMask(relative_score=True, **kwargs)
