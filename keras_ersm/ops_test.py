import keras
import numpy as np
import pytest
from keras import ops

from keras_ersm import ops as ersm_ops
from keras_ersm.layers import _numpy_reference as ref
from keras_ersm.testing.test_case import input_gradient


def _np(x):
    return ops.convert_to_numpy(x)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_tokenize_order_and_round_trip(p):
    x = np.random.default_rng(0).normal(size=(2, 6, 12, 4)).astype("float32")
    tokens = ersm_ops.tokenize(x, p)
    np.testing.assert_array_equal(_np(tokens), ref.tokens(x, p).astype("float32"))
    np.testing.assert_array_equal(_np(ersm_ops.untokenize(tokens, p, 4)), x)


def test_channels_first_tokens_use_row_col_channel_order():
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 4)).astype("float32")
    tokens = ersm_ops.tokenize(ersm_ops.to_channels_last(x, "channels_first"), 2)
    expected = ref.tokens(x, 2, "channels_first")
    np.testing.assert_array_equal(_np(tokens), expected.astype("float32"))


def test_box_sum_and_neighbour_sum_match_explicit_loops():
    x = np.random.default_rng(2).normal(size=(2, 5, 4, 3))
    box = _np(ersm_ops.box_sum_3x3(x.astype("float32")))
    np.testing.assert_allclose(box, ref.neighbour_sum(x) + x, rtol=1e-5, atol=1e-5)
    m = x[..., 0]
    np.testing.assert_allclose(
        _np(ersm_ops.neighbour_sum(m.astype("float32"))),
        ref.neighbour_sum(m),
        rtol=1e-5,
        atol=1e-5,
    )


def test_redundancy_matches_shifted_dot_products():
    x = np.random.default_rng(3).normal(size=(2, 5, 6, 7)).astype("float32")
    p_hat, norms = ersm_ops.normalize_tokens(x)
    expected = ref.reference_ersm(x, np.zeros((7, 1)), 0.0)["redundancy"]
    np.testing.assert_allclose(
        _np(ersm_ops.redundancy(p_hat, norms)), expected, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        _np(ersm_ops.redundancy(p_hat)), expected, rtol=1e-5, atol=1e-5
    )


def test_normalize_zero_token_is_zero_and_norms_finite():
    x = np.zeros((1, 2, 2, 3), "float32")
    p_hat, norms = ersm_ops.normalize_tokens(x)
    assert np.all(_np(p_hat) == 0)
    assert np.all(np.isfinite(_np(norms)))


def test_mean_field_zero_steps_is_sigmoid_and_isolated_token_stays():
    a = np.random.default_rng(4).normal(size=(1, 4, 4)).astype("float32")
    np.testing.assert_allclose(
        _np(ersm_ops.mean_field(a, 2.0, 0)), ref.sigmoid(a), rtol=1e-6
    )
    single = np.zeros((1, 1, 1), "float32")
    # A 1x1 grid has no neighbours: coupling changes nothing.
    np.testing.assert_allclose(_np(ersm_ops.mean_field(single, 5.0, 3)), 0.5)


def test_upsample_tokens():
    m = np.arange(6, dtype="float32").reshape(1, 2, 3)
    up = _np(ersm_ops.upsample_tokens(m, 2))
    assert up.shape == (1, 4, 6)
    np.testing.assert_array_equal(up[0, :2, :2], 0.0)
    np.testing.assert_array_equal(up[0, 2:, 4:], 5.0)


@pytest.fixture(params=["window", "shifted"])
def pair_path(request, monkeypatch):
    """Runs a test through each redundancy implementation (the strided
    windows exist on torch only)."""
    if request.param == "window":
        if keras.backend.backend() not in ersm_ops._WINDOW_BACKENDS:
            pytest.skip("the window path is torch only")
    else:
        monkeypatch.setattr(ersm_ops, "_WINDOW_BACKENDS", ())
    return request.param


@pytest.mark.parametrize("grid", [(1, 1), (1, 4), (3, 1), (4, 5), (3, 17)])
def test_scores_and_redundancy_match_reference(grid, pair_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, *grid, 6)).astype("float32")
    w = rng.normal(size=(6, 1)).astype("float32")
    expected = ref.reference_ersm(x, w, 0.0)
    proj, red = ersm_ops.scores_and_redundancy(x, w)
    np.testing.assert_allclose(_np(proj), expected["scores"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(red), expected["redundancy"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("magnitude", [0.0, 1e-30, 1.0, 1e19, 1e30])
def test_pieces_match_reference_at_any_magnitude(magnitude, pair_path):
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(2, 3, 4, 5)) * magnitude).astype("float32")
    w = rng.normal(size=(5, 1)).astype("float32")
    expected = ref.reference_ersm(x.astype("float64"), w, 0.0)
    unit, inv = ersm_ops.unit_tokens(x)
    p_hat, _ = ersm_ops.normalize_tokens(x)
    p_hat_pieces = _np(unit) * _np(inv)[..., None]
    np.testing.assert_allclose(p_hat_pieces, _np(p_hat), rtol=1e-5, atol=1e-30)
    proj = ersm_ops.projections(unit, inv, w)
    red = ersm_ops.pair_redundancy(unit, inv)
    assert np.all(np.isfinite(_np(proj))) and np.all(np.isfinite(_np(red)))
    np.testing.assert_allclose(_np(proj), expected["scores"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_np(red), expected["redundancy"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 4, 5, 3), (3, 2, 3, 2), (1, 3, 17, 2)])
@pytest.mark.parametrize("pieces", ["separate", "together"])
@pytest.mark.parametrize("magnitude", [1.0, 1e25])
def test_pair_redundancy_gradient_matches_materialised_p_hat(
    pair_path, shape, pieces, magnitude
):
    """The gradient of every path against `normalize_tokens` + `redundancy`,
    which materialise `p_hat`."""
    x = np.random.default_rng(7).normal(size=shape).astype("float32") * magnitude
    x[0, 1, 1] = 0.0  # an all-zero token: finite gradient
    kernel = np.linspace(-1, 1, shape[-1]).astype("float32")[:, None]

    def loss(t):
        if pieces == "separate":
            unit, inv = ersm_ops.unit_tokens(t)
            red = ersm_ops.pair_redundancy(unit, inv)
        else:
            unit, inv, pairs = ersm_ops.unit_tokens_and_pairs(t)
            red = ersm_ops.redundancy_from_pairs(pairs, inv)
        proj = ersm_ops.projections(unit, inv, kernel)
        return ops.sum(ops.sin(red)) + ops.sum(proj)

    def materialised(t):
        p_hat, norms = ersm_ops.normalize_tokens(t)
        red = ersm_ops.redundancy(p_hat, norms)
        return ops.sum(ops.sin(red)) + ops.sum(ops.matmul(p_hat, kernel))

    got = input_gradient(loss, x)
    expected = input_gradient(materialised, x)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 / magnitude)


def test_empty_batch_gives_empty_maps(pair_path):
    x = np.zeros((0, 3, 4, 5), "float32")
    proj, red = ersm_ops.scores_and_redundancy(x, np.ones((5, 1), "float32"))
    assert _np(proj).shape == (0, 3, 4) and _np(red).shape == (0, 3, 4)


@pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="the torch window path only"
)
def test_torch_window_path_refuses_a_second_order_gradient():
    import torch

    x = torch.rand(2, 4, 5, 3, dtype=torch.float32, requires_grad=True)
    _, _, pairs = ersm_ops.unit_tokens_and_pairs(x)
    total = sum(p.sum() for p in pairs) + (x**3).sum()
    with pytest.raises(RuntimeError, match="second-order"):
        torch.autograd.grad(total, x, create_graph=True)
    # A first-order gradient is unaffected.
    (grad,) = torch.autograd.grad(sum(p.sum() for p in pairs), x)
    assert torch.isfinite(grad).all()
