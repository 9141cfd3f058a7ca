import json

import keras
import numpy as np
import pytest
from keras import ops

import keras_ersm
from keras_ersm.layers import _numpy_reference as ref
from keras_ersm.testing import test_case

BACKEND = keras.backend.backend()
TOL = dict(rtol=1e-5, atol=1e-5)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _layer(x_shape, **kwargs):
    kwargs.setdefault("rescale", False)
    kwargs.setdefault("energy_regularizer", keras_ersm.EnergyRegularizer())
    layer = keras_ersm.EnergyMask(**kwargs)
    layer.build(x_shape)
    rng = np.random.default_rng(1)
    layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype("float32"))
    layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    return layer


# --- numerical agreement with the float64 NumPy statement --------------------


@pytest.mark.parametrize("patch_size", [1, 2])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("bias", ["scalar", "positional"])
def test_matches_numpy_reference(patch_size, data_format, bias):
    shape = (2, 8, 6, 3) if data_format == "channels_last" else (2, 3, 8, 6)
    x = _inputs(shape)
    layer = _layer(
        shape,
        patch_size=patch_size,
        data_format=data_format,
        bias=bias,
        temperature=0.7,
        energy_regularizer=keras_ersm.EnergyRegularizer(unary=0.3, pairwise=0.2),
    )
    expected = ref.reference_ersm(
        x,
        _np(layer.kernel),
        _np(layer.bias),
        p=patch_size,
        temperature=0.7,
        unary=0.3,
        pairwise=0.2,
        data_format=data_format,
    )
    terms = layer.energy_terms(x)
    for key in ("scores", "keep", "redundancy", "energy"):
        assert terms[key].dtype == "float32" or str(terms[key].dtype).endswith(
            "float32"
        )
        np.testing.assert_allclose(_np(terms[key]), expected[key], **TOL)
    output = layer(x)
    np.testing.assert_allclose(_np(output), expected["output"], **TOL)
    assert len(layer.losses) == 1
    np.testing.assert_allclose(_np(layer.losses[0]), expected["loss"], **TOL)


def test_coherent_matches_numpy_reference():
    x = _inputs((2, 6, 6, 4))
    layer = _layer(x.shape, coherence_steps=3, coherence_init=0.8)
    expected = ref.reference_ersm(
        x, _np(layer.kernel), _np(layer.bias), coherence=0.8, steps=3
    )
    terms = layer.energy_terms(x)
    np.testing.assert_allclose(_np(terms["keep"]), expected["keep"], **TOL)
    np.testing.assert_allclose(_np(layer(x)), expected["output"], **TOL)
    np.testing.assert_allclose(_np(layer.losses[0]), expected["loss"], **TOL)


def test_paper_settings_compute_the_reference_equations():
    layer = keras_ersm.EnergyMask.paper(patch_size=2)
    x = _inputs((2, 4, 4, 3))
    layer.build(x.shape)
    np.testing.assert_allclose(_np(layer.bias), 6.0)
    assert layer.temperature == 1.0 and layer.coherence_steps == 0
    assert not layer.rescale
    reg = layer.energy_regularizer
    assert (reg.unary, reg.pairwise, reg.weight) == (1e-3, 1e-3, 1.0)
    expected = ref.reference_ersm(x, _np(layer.kernel), 6.0, p=2)
    np.testing.assert_allclose(_np(layer(x)), expected["output"], **TOL)
    np.testing.assert_allclose(_np(layer.losses[0]), expected["loss"], **TOL)
    assert keras_ersm.EnergyMask.paper(temperature=2.0).temperature == 2.0


def test_same_padding_pads_and_crops():
    x = _inputs((2, 5, 7, 3))
    layer = _layer(x.shape, patch_size=2, padding="same")
    out = _np(layer(x))
    assert out.shape == x.shape
    padded = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    expected = ref.reference_ersm(padded, _np(layer.kernel), _np(layer.bias), p=2)
    np.testing.assert_allclose(out, expected["output"][:, :5, :7], **TOL)
    assert tuple(layer.energy_terms(x)["keep"].shape) == (2, 3, 4)


def test_rescale_preserves_mean_scale():
    x = np.abs(_inputs((2, 4, 4, 3))) + 0.1
    layer = _layer(x.shape, rescale=True, energy_regularizer=None)
    keep = _np(layer.energy_terms(x)["keep"])
    expected = x * (keep / (keep.mean(axis=(1, 2), keepdims=True) + 1e-6))[..., None]
    np.testing.assert_allclose(_np(layer(x)), expected, **TOL)


def test_measured_defaults():
    layer = keras_ersm.EnergyMask()
    layer.build((None, 4, 4, 3))
    assert layer.rescale is True and layer.coherence_steps == 0
    np.testing.assert_allclose(_np(layer.bias), 0.0)
    reg = layer.energy_regularizer
    assert (reg.unary, reg.pairwise, reg.weight) == (1e-2, 1e-3, 1.0)
    config = layer.get_config()["kernel_initializer"]
    assert config["class_name"] == "VarianceScaling"
    assert (
        config["config"]["scale"],
        config["config"]["mode"],
        config["config"]["distribution"],
    ) == (0.01, "fan_avg", "uniform")


def test_default_kernel_is_glorot_uniform_at_a_tenth_of_its_range():
    # The same draw as `"glorot_uniform"` (Glorot is VarianceScaling with
    # scale 1), scaled by sqrt(0.01): a weak random ranking at the start
    # (docs/concepts.md, "Trainability").
    kernels = {}
    for name, initializer in (("default", None), ("glorot", "glorot_uniform")):
        keras.utils.set_random_seed(3)
        layer = keras_ersm.EnergyMask(kernel_initializer=initializer)
        layer.build((None, 4, 4, 24))
        kernels[name] = _np(layer.kernel)
    limit = np.sqrt(6.0 / (24 + 1))
    assert np.abs(kernels["glorot"]).max() > 0.5 * limit
    np.testing.assert_allclose(
        kernels["default"], 0.1 * kernels["glorot"], rtol=1e-5, atol=1e-6 * limit
    )
    # Configs that name an initializer, as every saved layer's does, keep it.
    layer = keras_ersm.EnergyMask(kernel_initializer="glorot_uniform")
    clone = keras_ersm.EnergyMask.from_config(layer.get_config())
    assert isinstance(clone.kernel_initializer, keras.initializers.GlorotUniform)


def test_unknown_kernel_initializer_names_the_value():
    with pytest.raises(ValueError, match="bogus"):
        keras_ersm.EnergyMask(kernel_initializer="bogus")


def test_no_regularizer_adds_no_loss_and_no_energy():
    x = _inputs((1, 4, 4, 2))
    layer = keras_ersm.EnergyMask(energy_regularizer=None)
    layer(x)
    assert layer.losses == []
    assert "energy" not in layer.energy_terms(x)


# --- training --------------------------------------------------------------


def _compile(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=test_case.jit_compile(),
    )


def _check_fit(model, mask):
    x = _inputs((8, 8, 8, 3))
    y = np.arange(8) % 4
    before = {v.path: _np(v).copy() for v in mask.trainable_weights}
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for v in mask.trainable_weights:
        after = _np(v)
        assert np.all(np.isfinite(after))
        assert not np.allclose(after, before[v.path]), f"{v.path} did not train"


def test_fit_sequential_jit():
    mask = keras_ersm.EnergyMask(coherence_steps=2, bias="positional")
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same"),
            mask,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4),
        ]
    )
    _compile(model)
    assert {v.name for v in mask.trainable_weights} == {"kernel", "bias", "coherence"}
    _check_fit(model, mask)


def test_fit_functional_jit_patch2():
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    mask = keras_ersm.EnergyMask(patch_size=2, coherence_steps=1)
    pooled = keras.layers.GlobalAveragePooling2D()(mask(features))
    model = keras.Model(inputs, keras.layers.Dense(4)(pooled))
    _compile(model)
    _check_fit(model, mask)


def test_gradients_are_finite_and_reach_all_weights():
    x = _inputs((2, 4, 4, 3))
    x[0, 0, 0] = 0.0  # an all-zero token
    layer = _layer(x.shape, coherence_steps=2)

    def loss_fn():
        terms = layer.energy_terms(x)
        energy = layer.energy_regularizer(
            terms["keep"], terms["scores"], terms["redundancy"]
        )
        return ops.sum(layer(x)) + energy

    grads = _gradients(loss_fn, layer.trainable_weights)
    for var, grad in zip(layer.trainable_weights, grads, strict=True):
        grad = _np(grad)
        assert np.all(np.isfinite(grad)), var.name
        assert np.any(grad != 0), var.name


def _gradients(loss_fn, variables):
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn()
        return tape.gradient(loss, [v.value for v in variables])
    if BACKEND == "torch":
        loss = loss_fn()
        loss.backward()
        return [v.value.grad for v in variables]
    import jax

    values = [v.value for v in variables]

    def stateless(vals):
        with keras.StatelessScope(
            state_mapping=list(zip(variables, vals, strict=True))
        ):
            return loss_fn()

    return jax.grad(stateless)(values)


# --- coherent variant ------------------------------------------------------


def test_zero_coupling_equals_reference_layer():
    x = _inputs((2, 6, 6, 4))
    plain = _layer(x.shape)
    coherent = _layer(x.shape, coherence_steps=4, coherence_init=0.0)
    np.testing.assert_allclose(_np(coherent(x)), _np(plain(x)), **TOL)


def _disagreements(keep):
    binary = keep > 0.5
    return np.sum(binary[:, 1:] != binary[:, :-1]) + np.sum(
        binary[:, :, 1:] != binary[:, :, :-1]
    )


def test_positive_coupling_smooths_a_noisy_mask():
    x = _inputs((4, 16, 16, 8), seed=3)
    plain = _layer(x.shape)
    coherent = _layer(x.shape, coherence_steps=5, coherence_init=1.0)
    noisy = _np(plain.energy_terms(x)["keep"])
    smooth = _np(coherent.energy_terms(x)["keep"])
    assert _disagreements(noisy) > 50
    assert _disagreements(smooth) < 0.5 * _disagreements(noisy)


# --- serialization ---------------------------------------------------------


def test_config_round_trip_and_json():
    layer = keras_ersm.EnergyMask(
        patch_size=2,
        temperature=0.5,
        bias="positional",
        coherence_steps=3,
        coherence_init=0.25,
        energy_regularizer=keras_ersm.EnergyRegularizer(0.1, 0.2, 3.0),
        rescale=True,
        padding="same",
        data_format="channels_first",
        name="m",
    )
    config = layer.get_config()
    expected_keys = {
        "patch_size",
        "temperature",
        "bias",
        "kernel_initializer",
        "bias_initializer",
        "coherence_steps",
        "coherence_init",
        "energy_regularizer",
        "rescale",
        "padding",
        "data_format",
        "norm_score",
        "norm_init",
    }
    assert expected_keys <= set(config)
    clone = keras_ersm.EnergyMask.from_config(config)
    assert clone.get_config() == config
    serialized = json.dumps(keras.saving.serialize_keras_object(layer))
    restored = keras.saving.deserialize_keras_object(json.loads(serialized))
    assert isinstance(restored, keras_ersm.EnergyMask)
    assert restored.get_config() == config
    assert restored.energy_regularizer.weight == 3.0


def test_regularizer_serialization():
    reg = keras_ersm.EnergyRegularizer(0.5, 0.25, 2.0)
    data = json.loads(json.dumps(keras.regularizers.serialize(reg)))
    restored = keras.regularizers.deserialize(data)
    assert isinstance(restored, keras_ersm.EnergyRegularizer)
    assert restored.get_config() == reg.get_config()
    # The EnergyMask loss term, not a weight regularizer (regularizers_test).
    assert not isinstance(reg, keras.regularizers.Regularizer)


@pytest.mark.parametrize("coherence_steps", [0, 2])
def test_keras_file_round_trip(coherence_steps):
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    masked = keras_ersm.EnergyMask(
        patch_size=2, bias="positional", coherence_steps=coherence_steps
    )(features)
    model = keras.Model(inputs, masked)
    model.layers[1].trainable = False  # the flag must survive the round trip
    # Outputs, energy loss, weight count and trainable flags, safe_mode=True.
    test_case.check_save_and_load(model, _inputs((2, 8, 8, 3)))


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({}, (2, 8, 8, 3)),
        (dict(patch_size=2, bias="positional", coherence_steps=1), (2, 8, 8, 3)),
        (
            dict(data_format="channels_first", padding="same", patch_size=3),
            (2, 3, 8, 7),
        ),
        (dict(energy_regularizer=None, rescale=False), (2, 4, 6, 2)),
    ],
)
def test_standard_layer_checks(kwargs, shape):
    # Config and JSON round trip, symbolic and eager call, mixed precision,
    # .keras under safe_mode=True with a frozen layer, one jit fit step.
    with_energy = kwargs.get("energy_regularizer", "default") is not None
    test_case.run_layer_test(
        keras_ersm.EnergyMask,
        kwargs,
        shape,
        expected_num_trainable_weights=3 if kwargs.get("coherence_steps") else 2,
        expected_num_losses=1 if with_energy else 0,
    )


# --- shapes, dtypes, masking ----------------------------------------------


def test_weight_shapes_and_counts():
    layer = keras_ersm.EnergyMask(patch_size=2, bias="positional", coherence_steps=1)
    layer.build((None, 8, 6, 5))
    assert tuple(layer.kernel.shape) == (20, 1)
    assert tuple(layer.bias.shape) == (4, 3)
    assert tuple(layer.coherence.shape) == ()
    assert len(layer.weights) == 3
    scalar = keras_ersm.EnergyMask()
    scalar.build((None, None, None, 5))
    assert tuple(scalar.bias.shape) == () and len(scalar.weights) == 2
    symbolic = keras_ersm.EnergyMask()
    symbolic(keras.KerasTensor((None, 4, 4, 3)))
    assert len(symbolic.weights) == 2
    eager = keras_ersm.EnergyMask()
    eager(_inputs((1, 4, 4, 3)))
    assert len(eager.weights) == 2


def test_compute_output_shape_matches_eager():
    layer = keras_ersm.EnergyMask(patch_size=2)
    x = _inputs((3, 4, 6, 2))
    assert layer.compute_output_shape((None, 4, 6, 2)) == (None, 4, 6, 2)
    assert tuple(layer(x).shape) == layer.compute_output_shape(x.shape)
    symbolic = layer(keras.KerasTensor((None, 4, 6, 2)))
    assert tuple(symbolic.shape) == (None, 4, 6, 2)


def test_any_spatial_size_with_scalar_bias():
    layer = keras_ersm.EnergyMask()
    assert tuple(layer(_inputs((1, 4, 4, 3))).shape) == (1, 4, 4, 3)
    assert tuple(layer(_inputs((1, 6, 10, 3))).shape) == (1, 6, 10, 3)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        layer = keras_ersm.EnergyMask(coherence_steps=1)
        x = ops.cast(_inputs((2, 4, 4, 3)) * 100.0, layer.compute_dtype)
        out = layer(x)
        terms = layer.energy_terms(x)
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.backend.standardize_dtype(out.dtype) == layer.compute_dtype
    assert layer.compute_dtype != "float32"
    for w in layer.weights:
        assert keras.backend.standardize_dtype(w.dtype) == "float32"
    for value in terms.values():
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        assert np.all(np.isfinite(_np(value)))
    loss = layer.losses[0]
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    assert np.isfinite(_np(loss))
    assert np.all(np.isfinite(_np(ops.cast(out, "float32"))))


def test_extreme_scores_and_zero_tokens_stay_finite():
    x = np.zeros((2, 4, 4, 3), "float32")
    x[1] = 1e4
    layer = keras_ersm.EnergyMask(bias_initializer=keras.initializers.Constant(1e4))
    out = _np(layer(x))
    terms = layer.energy_terms(x)
    assert np.all(np.isfinite(out))
    for value in terms.values():
        assert np.all(np.isfinite(_np(value)))
    assert np.isfinite(_np(layer.losses[0]))


def test_training_false_is_deterministic():
    layer = keras_ersm.EnergyMask(coherence_steps=2)
    x = _inputs((2, 4, 4, 3))
    np.testing.assert_array_equal(
        _np(layer(x, training=False)), _np(layer(x, training=False))
    )


def test_masking_is_propagated():
    layer = keras_ersm.EnergyMask()
    assert layer.supports_masking
    mask = np.ones((2, 4, 4), bool)
    assert layer.compute_mask(_inputs((2, 4, 4, 3)), mask) is mask
    assert layer.compute_mask(_inputs((2, 4, 4, 3)), None) is None


def test_layer_works_inside_symbolic_functional_graph_channels_first():
    inputs = keras.Input((3, 8, 8))
    out = keras_ersm.EnergyMask(patch_size=2, data_format="channels_first")(inputs)
    model = keras.Model(inputs, out)
    x = _inputs((2, 3, 8, 8))
    assert tuple(model(x).shape) == (2, 3, 8, 8)


# --- bad input -------------------------------------------------------------


# Wrong type -> TypeError, wrong value -> ValueError (keras_ersm._validation).
@pytest.mark.parametrize(
    "kwargs, received, error",
    [
        (dict(patch_size=0), "patch_size=0", ValueError),
        (dict(patch_size=1.5), "patch_size=1.5", TypeError),
        (dict(temperature=0.0), "temperature=0.0", ValueError),
        (dict(temperature=-1), "temperature=-1", ValueError),
        (dict(coherence_init=-0.5), "coherence_init=-0.5", ValueError),
        (dict(coherence_steps=-1), "coherence_steps=-1", ValueError),
        (dict(bias="channel"), "bias='channel'", ValueError),
        (dict(padding="full"), "padding='full'", ValueError),
        (dict(data_format="NHWC"), "data_format='NHWC'", ValueError),
        (dict(rescale="yes"), "rescale='yes'", TypeError),
        (dict(energy_regularizer=3), "energy_regularizer=3", TypeError),
        (dict(norm_score=True, norm_init=2e4), "norm_init=20000.0", ValueError),
        (dict(norm_score=True, norm_init="low"), "norm_init='low'", TypeError),
        (dict(norm_score=True, norm_init=True), "norm_init=True", TypeError),
        (dict(norm_init=-1.0), "norm_init=-1.0, norm_score=False", ValueError),
    ],
)
def test_invalid_arguments(kwargs, received, error):
    with pytest.raises(error, match="Received: " + received.replace(".", r"\.")):
        keras_ersm.EnergyMask(**kwargs)


@pytest.mark.parametrize(
    "kwargs", [dict(unary=-1.0), dict(pairwise=-2), dict(weight=-0.1)]
)
def test_invalid_regularizer_weights(kwargs):
    name, value = next(iter(kwargs.items()))
    with pytest.raises(ValueError, match=f"Received: {name}={value}"):
        keras_ersm.EnergyRegularizer(**kwargs)
    with pytest.raises(TypeError, match="Received: unary='a'"):
        keras_ersm.EnergyRegularizer(unary="a")


def test_wrong_rank():
    with pytest.raises(ValueError, match=r"Received: input_shape=\(2, 4, 3\)"):
        keras_ersm.EnergyMask()(_inputs((2, 4, 3)))


def test_non_divisible_valid_padding():
    with pytest.raises(
        ValueError, match=r"input_shape=\(None, 5, 4, 3\).*padding='same'"
    ):
        keras_ersm.EnergyMask(patch_size=2).build((None, 5, 4, 3))


def test_non_divisible_valid_padding_at_call_with_dynamic_build():
    layer = keras_ersm.EnergyMask(patch_size=2)
    layer.build((None, None, None, 3))
    with pytest.raises(ValueError, match=r"input_shape=\(1, 5, 4, 3\)"):
        layer(_inputs((1, 5, 4, 3)))


def test_positional_bias_needs_static_size():
    with pytest.raises(ValueError, match=r"input_shape=\(None, None, None, 3\)"):
        keras_ersm.EnergyMask(bias="positional").build((None, None, None, 3))
