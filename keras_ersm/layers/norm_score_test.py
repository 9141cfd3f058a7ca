"""`EnergyMask(norm_score=True)`: the score also sees the token's norm
relative to the image's mean token norm (docs/concepts.md, "The score sees
the token's norm")."""

import keras
import numpy as np
import pytest

import keras_ersm
from keras_ersm.testing.test_case import input_gradient

BACKEND = keras.backend.backend()
JIT = BACKEND != "torch"


def _features(shape=(2, 6, 6, 3), seed=0):
    rng = np.random.default_rng(seed)
    # Tokens of different norms within each image.
    return (rng.normal(size=shape) * rng.uniform(0.1, 3.0, shape[:3] + (1,))).astype(
        "float32"
    )


def _layer(x, **kwargs):
    layer = keras_ersm.EnergyMask(**kwargs)
    layer.build(x.shape)
    return layer


def test_default_has_no_norm_weight_and_config_round_trips():
    x = _features()
    assert _layer(x).norm_weight is None
    layer = _layer(x, norm_score=True)
    assert layer.norm_weight.shape == ()
    assert float(keras.ops.convert_to_numpy(layer.norm_weight)) == 0.0
    assert layer.get_config()["norm_score"] is True
    assert keras_ersm.EnergyMask.from_config(layer.get_config()).norm_score
    # Configs saved before the argument existed load without it.
    config = layer.get_config()
    del config["norm_score"]
    assert not keras_ersm.EnergyMask.from_config(config).norm_score
    assert not keras_ersm.EnergyMask.paper().norm_score
    with pytest.raises(TypeError, match="norm_score=.yes."):
        keras_ersm.EnergyMask(norm_score="yes")


@pytest.mark.parametrize("patch_size", [1, 2])
def test_scores_match_the_numpy_formula(patch_size):
    x = _features()
    layer = _layer(x, norm_score=True, patch_size=patch_size)
    layer.norm_weight.assign(-0.7)
    layer.bias.assign(0.3)
    terms = layer.energy_terms(x)
    b, h, w, c = x.shape
    p = patch_size
    tokens = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    tokens = tokens.reshape(b, h // p, w // p, -1)
    norms = np.linalg.norm(tokens, axis=-1)
    unit = tokens / (norms[..., None] + 1e-6)
    kernel = keras.ops.convert_to_numpy(layer.kernel)[:, 0]
    relative = norms / norms.mean(axis=(1, 2), keepdims=True) - 1.0
    expected = unit @ kernel + 0.3 - 0.7 * relative
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(terms["scores"]), expected, rtol=1e-4, atol=1e-5
    )


def test_zero_weight_gives_the_plain_layer():
    x = _features()
    plain = _layer(x)
    normed = _layer(x, norm_score=True)
    normed.kernel.assign(plain.kernel)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(normed(x)), keras.ops.convert_to_numpy(plain(x))
    )


def test_the_norm_is_read_without_gradient():
    """With a zero kernel the scores depend on the input only through the
    norm term: no gradient may reach the input through it."""
    x = _features()
    layer = _layer(x, norm_score=True, kernel_initializer="zeros")
    layer.norm_weight.assign(1.5)

    # `0 * sum(inputs)` keeps the input in the graph, so every backend
    # returns a (zero) gradient rather than none.
    def keep_sum(inputs):
        keep = layer.energy_terms(inputs)["keep"]
        return keras.ops.sum(keep) + 0.0 * keras.ops.sum(inputs)

    def energy(inputs):
        terms = layer._compute_terms(inputs)
        return layer._energy_loss(terms) + 0.0 * keras.ops.sum(inputs)

    for fn in (keep_sum, energy):
        grad = input_gradient(fn, x)
        np.testing.assert_array_equal(grad, np.zeros_like(grad))
    # The term does change the keep (so the test above is not vacuous).
    keep = keras.ops.convert_to_numpy(layer.energy_terms(x)["keep"])
    assert keep.std() > 0.05


def test_finite_on_zero_tiny_and_huge_inputs():
    # A zero kernel isolates the norm term (the normalised tokens' epsilon
    # makes the kernel's term depend on the magnitude of tiny tokens).
    layer = _layer(_features(), norm_score=True, kernel_initializer="zeros")
    layer.norm_weight.assign(2.0)
    for scale in (0.0, 1e-30, 1e30):
        x = _features() * np.float32(scale)
        keep = keras.ops.convert_to_numpy(layer.energy_terms(x)["keep"])
        assert np.all(np.isfinite(keep))
        if scale:
            # Scale-invariant: the same keep at any magnitude.
            reference = keras.ops.convert_to_numpy(
                layer.energy_terms(_features())["keep"]
            )
            np.testing.assert_allclose(keep, reference, rtol=1e-4, atol=1e-6)


def _fit_step(layer_kwargs, loss_fn, optimizer):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    mask = keras_ersm.EnergyMask(norm_score=True, **layer_kwargs)
    outputs = keras.layers.GlobalAveragePooling2D()(mask(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=optimizer, loss=loss_fn, jit_compile=JIT)
    x = _features((4, 6, 6, 3))
    model.fit(x, np.zeros((4, 3), "float32"), batch_size=4, epochs=1, verbose=0)
    return float(keras.ops.convert_to_numpy(mask.norm_weight)), model, x


def test_the_norm_weight_trains():
    def task(y_true, y_pred):
        return keras.ops.sum(y_pred)

    weight, _, _ = _fit_step(
        {"energy_regularizer": None}, task, keras.optimizers.SGD(0.1)
    )
    assert weight != 0.0


def test_energy_kernel_gradient_zero_leaves_the_norm_weight_to_the_task():
    def zero(y_true, y_pred):
        return 0.0 * keras.ops.sum(y_pred)

    energy = keras_ersm.EnergyRegularizer(unary=1.0, pairwise=1.0)
    trained, _, _ = _fit_step(
        {"energy_regularizer": energy, "energy_score_gradient": 1.0},
        zero,
        keras.optimizers.SGD(0.1),
    )
    assert trained != 0.0
    stopped, _, _ = _fit_step(
        {
            "energy_regularizer": energy,
            "energy_score_gradient": 1.0,
            "energy_kernel_gradient": 0.0,
        },
        zero,
        keras.optimizers.SGD(0.1),
    )
    assert stopped == 0.0


def test_saved_and_loaded(tmp_path):
    def task(y_true, y_pred):
        return keras.ops.sum(y_pred)

    _, model, x = _fit_step({}, task, keras.optimizers.Adam(0.1))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert loaded.layers[1].norm_score
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5
    )
