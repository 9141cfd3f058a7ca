"""Property-based tests of `EnergyMask` on hostile inputs (hypothesis).

Random shapes, patch sizes, paddings, data formats, compute dtypes, batch
sizes (0 and 1 included), 1x1 maps, all-zero maps, huge (1e30) and tiny
(1e-30) magnitudes, NaN and Inf. The layer either works (same shape, finite
outputs where the inputs are finite, keep in [0, 1]) or raises a clear
ValueError; see the NaN policy in the `EnergyMask` docstring.
"""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import ops

from keras_ersm.layers.energy_mask import EnergyMask

# Eager JAX compiles every op for each new shape and dtype (about 3 s per
# new example on a shared 2-core machine), so it draws fewer examples.
SETTINGS = settings(
    max_examples=8 if keras.backend.backend() == "jax" else 25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Largest magnitude each compute dtype can hold with room to spare.
_MAX_MAGNITUDE = {"float32": 1e30, "bfloat16": 1e30, "float16": 1e4}
_MAGNITUDES = (0.0, 1e-30, 1e-3, 1.0, 1e4, 1e30)


def _numpy(x):
    return ops.convert_to_numpy(ops.cast(x, "float32"))


def _make_input(rng, shape, magnitude, fill):
    if fill == "zeros" or magnitude == 0.0:
        return np.zeros(shape, "float32")
    if fill == "constant":
        return np.full(shape, magnitude, "float32")
    return (rng.standard_normal(shape) * magnitude).astype("float32")


@st.composite
def cases(draw):
    patch_size = draw(st.sampled_from([1, 2, 3]))
    padding = draw(st.sampled_from(["valid", "same"]))
    dtype = draw(st.sampled_from(["float32", "float16", "bfloat16"]))
    magnitude = draw(st.sampled_from(_MAGNITUDES))
    return {
        # Few distinct shapes, so JAX reuses its compiled eager ops.
        "batch": draw(st.sampled_from([0, 1, 2])),
        "height": draw(st.sampled_from([1, 2, 3, 4])),
        "width": draw(st.sampled_from([1, 2, 4])),
        "channels": draw(st.sampled_from([1, 3])),
        "layer": {
            "patch_size": patch_size,
            "padding": padding,
            "data_format": draw(st.sampled_from(["channels_last", "channels_first"])),
            "coherence_steps": draw(st.sampled_from([0, 2])),
            "rescale": draw(st.booleans()),
            "dtype": dtype,
        },
        "magnitude": min(magnitude, _MAX_MAGNITUDE[dtype]),
        "fill": draw(st.sampled_from(["random", "constant", "zeros"])),
        "seed": draw(st.integers(0, 2**16)),
    }


def _shape(case):
    h, w, c = case["height"], case["width"], case["channels"]
    if case["layer"]["data_format"] == "channels_first":
        return (case["batch"], c, h, w)
    return (case["batch"], h, w, c)


@pytest.mark.slow
@SETTINGS
@given(cases())
def test_finite_inputs_give_finite_outputs_or_a_clear_error(case):
    rng = np.random.default_rng(case["seed"])
    x = _make_input(rng, _shape(case), case["magnitude"], case["fill"])
    layer = EnergyMask(**case["layer"])
    p = case["layer"]["patch_size"]
    divisible = case["height"] % p == 0 and case["width"] % p == 0
    if case["layer"]["padding"] == "valid" and not divisible:
        with pytest.raises(ValueError, match="patch_size"):
            layer(x)
        return

    y = layer(x)
    assert tuple(y.shape) == x.shape
    assert keras.backend.standardize_dtype(y.dtype) == case["layer"]["dtype"]
    y = _numpy(y)
    assert np.all(np.isfinite(y))

    terms = {k: _numpy(v) for k, v in layer.energy_terms(x).items()}
    grid = (-(-case["height"] // p), -(-case["width"] // p))
    for name, value in terms.items():
        assert value.shape == (case["batch"], *grid), name
        assert np.all(np.isfinite(value)), name
    keep = terms["keep"]
    assert np.all((keep >= 0.0) & (keep <= 1.0))
    if not case["layer"]["rescale"]:
        # Masking never amplifies a feature.
        x_in_dtype = _numpy(ops.cast(x, case["layer"]["dtype"]))
        assert np.all(np.abs(y) <= np.abs(x_in_dtype))

    (loss,) = layer.losses
    loss = float(_numpy(loss))
    assert np.isfinite(loss)
    assert loss >= 0.0


@pytest.mark.slow
@SETTINGS
@given(
    cases(),
    st.sampled_from([np.nan, np.inf, -np.inf]),
    st.integers(0, 2**16),
)
def test_non_finite_inputs_follow_the_nan_policy(case, bad_value, position):
    case["batch"] = max(case["batch"], 1)
    case["layer"].update(padding="same", coherence_steps=0, rescale=False)
    rng = np.random.default_rng(case["seed"])
    x = _make_input(rng, _shape(case), case["magnitude"], case["fill"])
    flat = x.reshape(-1)
    flat[position % flat.size] = bad_value
    layer = EnergyMask(**case["layer"])

    y = _numpy(layer(x))
    assert y.shape == x.shape
    keep = _numpy(layer.energy_terms(x)["keep"])

    # Which tokens hold a non-finite input.
    finite = np.isfinite(x)
    if case["layer"]["data_format"] == "channels_first":
        finite = np.transpose(finite, (0, 2, 3, 1))
    p = case["layer"]["patch_size"]
    b, h, w, c = finite.shape
    padded = np.ones((b, -(-h // p) * p, -(-w // p) * p, c), bool)
    padded[:, :h, :w] = finite
    gh, gw = padded.shape[1] // p, padded.shape[2] // p
    token_finite = padded.reshape(b, gh, p, gw, p, c).all(axis=(2, 4, 5))

    # Bad tokens get a NaN keep; every other token is untouched by them.
    assert np.all(np.isnan(keep[~token_finite]))
    good_keep = keep[token_finite]
    assert np.all((good_keep >= 0.0) & (good_keep <= 1.0))
    pixel_finite = np.repeat(np.repeat(token_finite, p, 1), p, 2)[:, :h, :w]
    y_last = y
    if case["layer"]["data_format"] == "channels_first":
        y_last = np.transpose(y, (0, 2, 3, 1))
    assert np.all(np.isfinite(y_last[pixel_finite]))
    assert not np.all(np.isfinite(y_last[~pixel_finite]))

    # The energy loss is never silently finite.
    (loss,) = layer.losses
    assert np.isnan(float(_numpy(loss)))


@pytest.mark.parametrize("value", [1e30, -1e30, 1e-30])
def test_extreme_magnitudes_keep_the_normalised_direction(value):
    # Regression: the squared norm of a 1e30 token used to overflow to inf,
    # so p_hat became 0 and the redundancy NaN (inf / inf).
    layer = EnergyMask(patch_size=2, data_format="channels_last")
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2, 4, 4, 3)).astype("float32")
    reference = {k: _numpy(v) for k, v in layer.energy_terms(base).items()}
    scaled = {k: _numpy(v) for k, v in layer.energy_terms(base * value).items()}
    if abs(value) >= 1.0:
        sign = np.sign(value)
        bias = _numpy(layer.bias)
        np.testing.assert_allclose(
            scaled["scores"] - bias, sign * (reference["scores"] - bias), atol=1e-5
        )
        np.testing.assert_allclose(
            scaled["redundancy"], reference["redundancy"], atol=1e-5
        )
    for v in scaled.values():
        assert np.all(np.isfinite(v))


def test_empty_batch_gives_empty_outputs_and_a_zero_loss():
    layer = EnergyMask(patch_size=2, data_format="channels_last")
    x = np.zeros((0, 4, 4, 3), "float32")
    y = layer(x)
    assert tuple(y.shape) == (0, 4, 4, 3)
    (loss,) = layer.losses
    assert float(_numpy(loss)) == 0.0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_plain_low_precision_policy(dtype):
    # Regression: under dtype="float16" the weights are float16 and the
    # float32 scores failed to add the bias on TensorFlow.
    layer = EnergyMask(patch_size=2, coherence_steps=1, dtype=dtype)
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 3)).astype("float32")
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == dtype
    assert np.all(np.isfinite(_numpy(y)))
    assert np.isfinite(float(_numpy(layer.losses[0])))
