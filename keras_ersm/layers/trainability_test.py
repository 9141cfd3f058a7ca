"""The energy must never stop a model from learning (docs/concepts.md,
"Trainability").

Unit tests of `energy_feature_gradient`: with the default (0) the energy
loss trains the mask's own weights and leaves the backbone alone, so it
cannot drive the backbone's features to zero; 1 is the reference
behaviour; values in between scale the gradient that reaches the features.
The end-to-end regression test trains a plain CNN without normalisation
with AdamW on a seed where the reference behaviour collapses it.
"""

import keras
import numpy as np
import pytest

import keras_ersm
from keras_ersm.datasets import make_cluttered
from keras_ersm.testing.test_case import input_gradient

BACKEND = keras.backend.backend()
JIT = BACKEND != "torch"


def _energy_only_step(layer_kwargs, learning_rate=0.1, seed=0):
    """One SGD step on the energy loss alone (the task loss is 0).

    Returns the change of the backbone's conv kernel and of the mask's
    kernel and bias.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
    mask = keras_ersm.EnergyMask(
        energy_regularizer=keras_ersm.EnergyRegularizer(unary=1.0, pairwise=1.0),
        **layer_kwargs,
    )
    outputs = keras.layers.GlobalAveragePooling2D()(mask(conv(inputs)))
    model = keras.Model(inputs, outputs)

    def zero_loss(y_true, y_pred):
        return 0.0 * keras.ops.sum(y_pred)

    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate), loss=zero_loss, jit_compile=JIT
    )
    x = np.random.default_rng(seed).uniform(size=(4, 8, 8, 3)).astype("float32")
    before = [
        keras.ops.convert_to_numpy(w) for w in (conv.kernel, mask.kernel, mask.bias)
    ]
    model.fit(x, np.zeros((4, 4), "float32"), batch_size=4, epochs=1, verbose=0)
    after = [
        keras.ops.convert_to_numpy(w) for w in (conv.kernel, mask.kernel, mask.bias)
    ]
    return [a - b for a, b in zip(after, before, strict=True)]


def test_default_energy_does_not_reach_the_backbone():
    backbone, kernel, bias = _energy_only_step({})
    np.testing.assert_array_equal(backbone, np.zeros_like(backbone))
    # ... but it still trains the mask's own weights.
    assert np.abs(kernel).max() > 0
    assert np.abs(bias).max() > 0


def test_full_energy_gradient_reaches_the_backbone():
    backbone, _, _ = _energy_only_step({"energy_feature_gradient": 1.0})
    assert np.abs(backbone).max() > 0


def test_energy_feature_gradient_scales_the_backbone_gradient():
    full, full_kernel, full_bias = _energy_only_step({"energy_feature_gradient": 1.0})
    half, half_kernel, half_bias = _energy_only_step({"energy_feature_gradient": 0.5})
    np.testing.assert_allclose(half, 0.5 * full, rtol=1e-3, atol=1e-7)
    # The mask's own weights get the same update whatever the scale.
    np.testing.assert_allclose(half_kernel, full_kernel, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(half_bias, full_bias, rtol=1e-4, atol=1e-7)


def test_energy_kernel_gradient_zero_leaves_the_kernel_to_the_task():
    _, kernel, bias = _energy_only_step({"energy_kernel_gradient": 0.0})
    np.testing.assert_array_equal(kernel, np.zeros_like(kernel))
    # The energy still sets the keep level through the bias.
    assert np.abs(bias).max() > 0


@pytest.mark.parametrize("feature_scale", [0.0, 1.0])
def test_energy_kernel_gradient_scales_only_the_kernel_update(feature_scale):
    full = _energy_only_step({"energy_feature_gradient": feature_scale})
    half = _energy_only_step(
        {"energy_feature_gradient": feature_scale, "energy_kernel_gradient": 0.5}
    )
    assert np.abs(full[1]).max() > 0
    np.testing.assert_allclose(half[1], 0.5 * full[1], rtol=1e-3, atol=1e-7)
    # The backbone and the bias get the same update whatever the scale.
    np.testing.assert_allclose(half[0], full[0], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(half[2], full[2], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0])
def test_forward_values_do_not_depend_on_the_gradient_scale(scale):
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 5)).astype("float32")
    reference = keras_ersm.EnergyMask(energy_feature_gradient=1.0)
    layer = keras_ersm.EnergyMask(
        energy_feature_gradient=scale, energy_kernel_gradient=1.0 - scale
    )
    reference.build(x.shape)
    layer.build(x.shape)
    layer.set_weights(reference.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)),
        keras.ops.convert_to_numpy(reference(x)),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.losses[0]),
        keras.ops.convert_to_numpy(reference.losses[0]),
        rtol=1e-5,
    )


def _input_gradient(layer, x, upstream):
    """Gradient of `sum(layer(x) * upstream)` (plus its energy loss) with
    respect to `x`."""

    def fn(t):
        loss = keras.ops.sum(layer(t) * keras.ops.convert_to_tensor(upstream))
        for extra in layer.losses:
            loss = loss + extra
        return loss

    return input_gradient(fn, x)


def _built(x, **kwargs):
    layer = keras_ersm.EnergyMask(**kwargs)
    layer.build(x.shape)
    return layer


@pytest.mark.parametrize("energy", [None, "default"])
def test_keep_feature_gradient_zero_trains_the_features_only_through_the_values(
    energy,
):
    # With keep_feature_gradient=0 the features' gradient is exactly that of
    # `x * keep / mean(keep)` with the keep held fixed: upstream * gain.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 6, 4)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    layer = _built(x, energy_regularizer=energy, keep_feature_gradient=0.0)
    keep = keras.ops.convert_to_numpy(layer.energy_terms(x)["keep"])
    gain = keep / (keep.mean(axis=(1, 2), keepdims=True) + 1e-6)
    grad = _input_gradient(layer, x, upstream)
    np.testing.assert_allclose(grad, upstream * gain[..., None], rtol=1e-4, atol=1e-6)
    # The reference layer's features also get the scores' gradient.
    full = _built(x, energy_regularizer=energy, energy_feature_gradient=1.0)
    full.set_weights(layer.get_weights())
    assert np.abs(_input_gradient(full, x, upstream) - grad).max() > 1e-3


def test_keep_feature_gradient_scales_the_scores_path():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 6, 4)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    weights = _built(x, energy_regularizer=None).get_weights()
    grads = {}
    for scale in (0.0, 0.5, 1.0):
        layer = _built(x, energy_regularizer=None, keep_feature_gradient=scale)
        layer.set_weights(weights)
        grads[scale] = _input_gradient(layer, x, upstream)
    np.testing.assert_allclose(
        grads[0.5] - grads[0.0], 0.5 * (grads[1.0] - grads[0.0]), rtol=1e-3, atol=1e-6
    )


def test_keep_feature_gradient_keeps_forward_values_and_mask_updates():
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 5)).astype("float32")
    reference = _built(x)
    layer = _built(x, keep_feature_gradient=0.0)
    layer.set_weights(reference.get_weights())
    for a, b in ((layer(x), reference(x)), (layer.losses[0], reference.losses[0])):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-5
        )
    # The energy-only step: the mask's own weights move alike, the backbone
    # (which the default energy does not reach) stays.
    full = _energy_only_step({})
    stopped = _energy_only_step({"keep_feature_gradient": 0.0})
    for a, b in zip(full, stopped, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "name, default",
    [
        ("energy_feature_gradient", 0.0),
        ("energy_kernel_gradient", 1.0),
        ("keep_feature_gradient", 1.0),
        ("energy_score_gradient", 0.0),
    ],
)
def test_gradient_scale_validation_and_config(name, default):
    for value in (-0.1, 1.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=name):
            keras_ersm.EnergyMask(**{name: value})
    with pytest.raises(TypeError, match=name):
        keras_ersm.EnergyMask(**{name: "none"})
    config = keras_ersm.EnergyMask(**{name: np.float32(0.25)}).get_config()
    assert config[name] == 0.25
    assert getattr(keras_ersm.EnergyMask.from_config(config), name) == 0.25
    assert getattr(keras_ersm.EnergyMask(), name) == default
    assert getattr(keras_ersm.EnergyMask.paper(), name) == 1.0
    # Configs saved before the argument existed load with the default.
    del config[name]
    assert getattr(keras_ersm.EnergyMask.from_config(config), name) == default


# --- energy_score_gradient: the energy as a price per token ----------------


def test_reference_energy_raises_a_keep_whose_score_is_low():
    # keep * softplus(z) is not monotone in z: below z ~ 0.54 its gradient
    # lowers z, i.e. raises the keep (docs/concepts.md, "The energy as a
    # price per token").
    regularizer = keras_ersm.EnergyRegularizer(unary=1.0, pairwise=0.0)
    z = np.array([[[-1.0, 0.0, 1.0, 3.0]]], "float32")
    s = keras.ops.zeros(z.shape)
    grad = np.asarray(
        input_gradient(lambda t: regularizer(keras.ops.sigmoid(-t), t, s), z)
    )
    assert grad[0, 0, 0] > 0 and grad[0, 0, 1] > 0
    assert grad[0, 0, 2] < 0 and grad[0, 0, 3] < 0


def _layer_energy_step(x, bias=-1.0, regularizer=None, **kwargs):
    """One SGD step (learning rate 0.1) of an `EnergyMask` on its energy loss
    alone: the change of its bias and of its mean keep, and its
    `energy_terms` before the step."""
    keras.utils.set_random_seed(0)
    layer = keras_ersm.EnergyMask(
        energy_regularizer=regularizer
        or keras_ersm.EnergyRegularizer(unary=1.0, pairwise=0.0),
        bias_initializer=keras.initializers.Constant(bias),
        **kwargs,
    )
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, layer(inputs))

    def zero_loss(y_true, y_pred):
        return 0.0 * keras.ops.sum(y_pred)

    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=zero_loss, jit_compile=JIT)
    keep = keras_ersm.models.keep_maps(model, x)[layer.name]
    before = {
        k: keras.ops.convert_to_numpy(v) for k, v in layer.energy_terms(x).items()
    }
    bias = float(np.ravel(keras.ops.convert_to_numpy(layer.bias))[0])
    model.fit(x, np.zeros_like(x), batch_size=len(x), epochs=1, verbose=0)
    after = keras_ersm.models.keep_maps(model, x)[layer.name]
    bias_change = float(np.ravel(keras.ops.convert_to_numpy(layer.bias))[0]) - bias
    return bias_change, float(np.mean(after) - np.mean(keep)), before


def test_default_energy_always_lowers_the_keep():
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 5)).astype("float32")
    # Bias -1: every score is below the turning point of keep * softplus(z),
    # where the reference energy (energy_score_gradient=1) raises the keep
    # (keras_ersm 0.1's default; MobileNetV3Small's mask rose to 0.53) ...
    bias_change, keep_change, _ = _layer_energy_step(x, energy_score_gradient=1.0)
    assert bias_change < 0 and keep_change > 0
    # ... and the default energy, a price per token, lowers it whatever the
    # scores: d(loss)/dz = -keep (1 - keep) E / T < 0.
    for bias in (-3.0, -1.0, 0.0, 1.0, 3.0):
        bias_change, keep_change, _ = _layer_energy_step(x, bias=bias)
        assert bias_change > 0 and keep_change < 0, bias


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_default_energy_gradient_is_that_of_a_fixed_price(temperature):
    # d mean(keep * stop_gradient(E)) / db = mean(-keep (1 - keep) E / T):
    # the bias moves by lr * mean(keep (1 - keep) E) / T, E at its values.
    x = np.random.default_rng(2).normal(size=(3, 5, 5, 4)).astype("float32")
    regularizer = keras_ersm.EnergyRegularizer(unary=1.0, pairwise=0.5)
    bias_change, _, before = _layer_energy_step(
        x, bias=0.3, regularizer=regularizer, temperature=temperature
    )
    keep, energy = before["keep"], before["energy"]
    expected = 0.1 * np.mean(keep * (1.0 - keep) * energy) / temperature
    np.testing.assert_allclose(bias_change, expected, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"coherence_steps": 2},
        {"energy_feature_gradient": 1.0, "energy_kernel_gradient": 0.5},
    ],
)
def test_energy_score_gradient_scales_only_the_energys_own_score_term(kwargs):
    # The mask's updates are linear in the scale: 0.5 is halfway between the
    # price (0) and the reference (1), and the two differ.
    def step(scale):
        _, kernel, bias = _energy_only_step({"energy_score_gradient": scale, **kwargs})
        return np.concatenate([kernel.ravel(), np.ravel(bias)])

    price, half, reference = step(0.0), step(0.5), step(1.0)
    assert np.abs(price - reference).max() > 1e-6
    np.testing.assert_allclose(half, 0.5 * (price + reference), rtol=1e-3, atol=1e-7)


def test_paper_energy_score_gradient_can_be_overridden():
    layer = keras_ersm.EnergyMask.paper(energy_score_gradient=0.0)
    assert layer.energy_score_gradient == 0.0
    assert keras_ersm.EnergyMask.paper().energy_score_gradient == 1.0


def test_energy_score_gradient_keeps_forward_values():
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 5)).astype("float32")
    reference = _built(x, energy_score_gradient=1.0)
    layer = _built(x)
    layer.set_weights(reference.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)),
        keras.ops.convert_to_numpy(reference(x)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.losses[0]),
        keras.ops.convert_to_numpy(reference.losses[0]),
        rtol=1e-6,
    )


# --- end to end: a plain CNN that the reference energy collapses ------------


def _plain_cnn_run(mask, seed=1, epochs=12):
    """Three Conv2D + ReLU (no normalisation), mask, GAP, Dense(10), AdamW.

    Returns the test accuracy and the fraction of exactly-zero activations
    at the mask's input after training.
    """
    x, y, _ = make_cluttered(3000, seed=0)
    xt, yt, _ = make_cluttered(500, split="test", seed=0)
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    h = inputs
    for filters, strides in ((32, 1), (64, 2), (64, 2)):
        h = keras.layers.Conv2D(filters, 3, strides=strides, padding="same")(h)
        h = keras.layers.Activation("relu")(h)
    features = keras.Model(inputs, h)
    h = keras.layers.GlobalAveragePooling2D()(mask(h))
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    model.compile(
        optimizer=keras.optimizers.AdamW(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=JIT,
    )
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    accuracy = model.evaluate(xt, yt, verbose=0, batch_size=250)[1]
    zeros = float(np.mean(features.predict(xt[:256], verbose=0) == 0.0))
    return accuracy, zeros


@pytest.mark.slow
@pytest.mark.skipif(
    BACKEND != "jax",
    reason="the collapsing seed was measured on JAX (other backends draw "
    "other initial weights from the same seed); the mechanism is covered on "
    "every backend by the energy-only tests above",
)
def test_default_energy_cannot_zero_every_feature_of_a_plain_cnn():
    # Measured on JAX (benchmarks/results/trainability_explore_jax.jsonl,
    # seed 1): with energy_feature_gradient=1.0 (keras_ersm 0.1.0's default)
    # the energy kills every feature at the mask's input: 0.48 -> 1.00 zeros
    # (0.99999 in a rerun in session 4), accuracy 10% (chance).
    # This run is not deterministic: XLA on CPU does not fix the order of
    # its float reductions, and this regime amplifies the differences. Four
    # runs of the same default code gave accuracy 0.10, 0.18, 0.19 and 0.31
    # with zeros 0.99, 0.63, 0.63 and 0.62 (one run stayed at chance, as the
    # baseline does on some seeds: docs/benchmarks.md, "Trainability"). So
    # the guard is the mechanism, not the accuracy: the energy must not be
    # able to zero every feature.
    _, zeros = _plain_cnn_run(keras_ersm.EnergyMask())
    assert zeros < 0.999, f"{zeros:.5f} of the features are exactly zero"
