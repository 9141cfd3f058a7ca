"""`EnergyMask(norm_score=True)`: the score also sees the token's norm
relative to the image's mean token norm (docs/concepts.md, "The score sees
the token's norm")."""

import keras
import numpy as np
import pytest

import keras_ersm
from keras_ersm.testing.test_case import check_save_and_load, input_gradient

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


@pytest.mark.parametrize(
    "patch_size, data_format, padding",
    [
        (1, "channels_last", "valid"),
        (2, "channels_last", "valid"),
        (4, "channels_last", "same"),
        (2, "channels_first", "valid"),
    ],
)
def test_scores_match_the_numpy_formula(patch_size, data_format, padding):
    x = _features()
    given = x if data_format == "channels_last" else x.transpose(0, 3, 1, 2)
    layer = _layer(
        given,
        norm_score=True,
        patch_size=patch_size,
        data_format=data_format,
        padding=padding,
    )
    layer.norm_weight.assign(-0.7)
    layer.bias.assign(0.3)
    terms = layer.energy_terms(given)
    p = patch_size
    if padding == "same":  # 6x6 padded with zeros to 8x8
        x = np.pad(x, ((0, 0), (0, (-6) % p), (0, (-6) % p), (0, 0)))
    b, h, w, c = x.shape
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
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(normed._energy_loss(normed._compute_terms(x))),
        keras.ops.convert_to_numpy(plain._energy_loss(plain._compute_terms(x))),
        rtol=1e-6,
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
        if not scale:
            # An all-zero image gets no term: the keep of the bias alone.
            np.testing.assert_allclose(keep, 0.5, rtol=1e-6)
        if scale:
            # Scale-invariant: the same keep at any magnitude.
            reference = keras.ops.convert_to_numpy(
                layer.energy_terms(_features())["keep"]
            )
            np.testing.assert_allclose(keep, reference, rtol=1e-4, atol=1e-6)


def test_a_nan_token_leaves_the_other_tokens_alone():
    """The NaN policy of the layer: a non-finite token gets a NaN keep, the
    other tokens of its image do not (the mean norm skips it)."""
    x = _features()
    # A zero kernel isolates the norm term: keep = sigmoid(-a * relative).
    layer = _layer(x, norm_score=True, kernel_initializer="zeros")
    layer.norm_weight.assign(1.0)
    clean = keras.ops.convert_to_numpy(layer.energy_terms(x)["keep"])
    for bad in (np.nan, np.inf):
        broken = x.copy()
        broken[0, 2, 3, 1] = bad
        keep = keras.ops.convert_to_numpy(layer.energy_terms(broken)["keep"])
        assert np.isnan(keep[0, 2, 3])
        # The other tokens: their norms over the mean of the finite norms.
        norms = np.linalg.norm(x[0], axis=-1)
        others = np.ones(norms.shape, bool)
        others[2, 3] = False
        relative = norms / norms[others].mean() - 1.0
        expected = 1.0 / (1.0 + np.exp(relative))
        np.testing.assert_allclose(keep[0][others], expected[others], rtol=1e-5)
        # The other image is unchanged.
        np.testing.assert_allclose(keep[1], clean[1], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"bias": "positional"}, {"coherence_steps": 2}],
    ids=["scalar", "positional", "coherent"],
)
def test_energy_gradient_to_the_norm_weight_scales_with_energy_kernel_gradient(
    kwargs,
):
    """From `a = 0.8`, one SGD step on the energy alone: the energy loss is
    the same whatever `energy_kernel_gradient`, the step of `a` is linear in
    it (0 at 0)."""
    energy = keras_ersm.EnergyRegularizer(unary=1.0, pairwise=1.0)

    def zero(y_true, y_pred):
        return 0.0 * keras.ops.sum(y_pred)

    steps, losses = [], []
    for scale in (0.0, 0.5, 1.0):
        layer_kwargs = dict(
            energy_regularizer=energy,
            energy_score_gradient=1.0,
            energy_kernel_gradient=scale,
            **kwargs,
        )
        after, model, x = _fit_step(
            layer_kwargs, zero, keras.optimizers.SGD(0.1), initial_weight=0.8
        )
        steps.append(after - float(np.float32(0.8)))
        # The loss's value, on a fresh layer with the same weights.
        layer = _layer(x, norm_score=True, **layer_kwargs)
        layer.kernel.assign(np.linspace(-1, 1, 3)[:, None].astype("float32"))
        layer.norm_weight.assign(0.8)
        terms = layer._compute_terms(x)
        losses.append(float(keras.ops.convert_to_numpy(layer._energy_loss(terms))))
    np.testing.assert_allclose(losses, losses[0], rtol=1e-5)
    assert steps[0] == 0.0 and steps[2] != 0.0
    np.testing.assert_allclose(steps[1], 0.5 * steps[2], rtol=1e-3)


def _fit_step(layer_kwargs, loss_fn, optimizer, initial_weight=0.0):
    """One step of `model.fit` on a mask with `norm_score=True`; returns
    `a` after it, the model and its input."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    mask = keras_ersm.EnergyMask(norm_score=True, **layer_kwargs)
    outputs = keras.layers.GlobalAveragePooling2D()(mask(inputs))
    model = keras.Model(inputs, outputs)
    mask.norm_weight.assign(initial_weight)
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


def test_norm_init_starts_the_weight_and_round_trips():
    x = _features()
    layer = _layer(x, norm_score=True, norm_init=np.float32(-0.25))
    assert float(keras.ops.convert_to_numpy(layer.norm_weight)) == -0.25
    assert layer.get_config()["norm_init"] == -0.25
    assert keras_ersm.EnergyMask.from_config(layer.get_config()).norm_init == -0.25
    # `.keras` under safe_mode=True: outputs, loss and the trained weight
    # (not its start) come back.
    inputs = keras.Input((6, 6, 3))
    model = keras.Model(
        inputs, keras_ersm.EnergyMask(norm_score=True, norm_init=-1.0)(inputs)
    )
    model.layers[1].norm_weight.assign(0.3)
    check_save_and_load(model, x)


def test_zero_norm_init_without_norm_score_is_accepted():
    # A non-zero one is an error (energy_mask_test.py, test_invalid_arguments).
    layer = keras_ersm.EnergyMask(norm_init=0.0)
    layer.build((None, 4, 4, 3))
    assert layer.norm_weight is None


def test_negative_norm_init_keeps_the_tokens_of_larger_norm():
    """Before any training the keep rises with the token's norm relative to
    its image's (a zero kernel isolates the norm term)."""
    x = _features()
    layer = _layer(x, norm_score=True, norm_init=-1.0, kernel_initializer="zeros")
    keep = keras.ops.convert_to_numpy(layer.energy_terms(x)["keep"])
    norms = np.linalg.norm(x, axis=-1)
    for image_keep, image_norms in zip(keep, norms, strict=True):
        order = np.argsort(image_norms.ravel())
        ranked = image_keep.ravel()[order]
        assert np.all(np.diff(ranked) >= 0)
        assert ranked[-1] - ranked[0] > 0.2
