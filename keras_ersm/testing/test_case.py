"""The checks every keras_ersm layer and model gets (internal test helpers).

After Keras' `testing.TestCase.run_layer_test` and KerasHub's `TestCase`:

- `run_layer_test(...)`: config round trip (also through JSON), symbolic
  and eager call, one fit step (jit-compiled where the backend jits), mixed
  precision, `.keras` save/load under `safe_mode=True`.
- `run_model_test(model, x, ...)`: eager and symbolic call, one fit step,
  `.keras` save/load under `safe_mode=True` with the same outputs, losses
  and `trainable` flags.

Plus the small models and data the tests share (`small_model`, `images`,
`PASS_THROUGH`). Plain functions, so pytest collects nothing here.
"""

import json
import os
import tempfile

import keras
import numpy as np

# keep = sigmoid(-(w . p_hat + b)) = 1 in float32 when b = -50 (|w . p_hat|
# is at most ||w||, about 1), and without the keep-preserving rescaling (a
# division by mean keep + 1e-6) the masks pass features through unchanged.
PASS_THROUGH = dict(
    bias_initializer=keras.initializers.Constant(-50.0),
    energy_regularizer=None,
    rescale=False,
)

MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


def jit_compile():
    """`jit_compile` for `Model.compile`: True where the backend jits."""
    return keras.backend.backend() != "torch"


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def input_gradient(fn, x):
    """Gradient of the scalar `fn(x)` with respect to the NumPy array `x`,
    on the current backend, as a NumPy array; zeros where `fn` does not
    depend on `x` (a stopped gradient: JAX gives zeros there, TensorFlow
    `None`, and torch an output that needs no gradient)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(fn)(x))
    if backend == "tensorflow":
        import tensorflow as tf

        t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            value = fn(t)
        grad = tape.gradient(value, t)
        return np.zeros_like(x) if grad is None else grad.numpy()
    import torch

    t = torch.tensor(x, requires_grad=True)
    value = fn(t)
    if not value.requires_grad:
        return np.zeros_like(x)
    value.backward()
    return np.zeros_like(x) if t.grad is None else t.grad.numpy()


def images(n=4, size=16, seed=0):
    """`(n, size, size, 3)` float32 images in [0, 1)."""
    return np.random.default_rng(seed).random((n, size, size, 3), "float32")


def small_model(name="small"):
    """A small Functional CNN: 16x16x3 -> (8, 8, 6) features."""
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Activation("relu", name="relu1")(x)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.Activation("relu", name="relu2")(x)
    return keras.Model(inputs, x, name=name)


def pyramid_model():
    """`small_model` with KerasCV-style pyramid metadata."""
    model = small_model("pyramid")
    model.pyramid_level_inputs = {"P1": "relu1", "P2": "relu2"}
    return model


def _layer_flags(model):
    """`(path, trainable)` of every layer (nested ones too) holding weights:
    an `InputLayer` has none and Keras does not restore its flag."""
    flags = []

    def walk(layer, prefix):
        for sub in getattr(layer, "layers", []):
            name = f"{prefix}/{sub.name}"
            if sub.weights:
                flags.append((name, sub.trainable))
            walk(sub, name)

    walk(model, model.name)
    return flags


def _total_loss(model):
    return sum(float(to_numpy(v)) for v in model.losses)


def _assert_close(actual, expected, tolerance, what):
    np.testing.assert_allclose(
        to_numpy(actual),
        to_numpy(expected),
        rtol=tolerance,
        atol=tolerance,
        err_msg=what,
    )


def check_save_and_load(model, x, tolerance=1e-6):
    """Saves `model` to `.keras`, loads it under `safe_mode=True` and checks
    the layers' `trainable` flags, outputs and added losses. Returns the
    loaded model."""
    expected = model(x, training=False)
    expected_loss = _total_loss(model)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model), (type(loaded), type(model))
    assert _layer_flags(loaded) == _layer_flags(model)
    assert len(loaded.weights) == len(model.weights)
    outputs = loaded(x, training=False)
    _assert_close(outputs, expected, tolerance, "outputs after .keras reload")
    np.testing.assert_allclose(
        _total_loss(loaded), expected_loss, rtol=tolerance, atol=tolerance
    )
    return loaded


def check_fit_step(model, x, y=None, loss="mse", trained=None):
    """One `fit` step (jit-compiled where the backend jits): the loss is
    finite and every weight in `trained` (default: the model's trainable
    weights) changes, frozen ones do not."""
    if y is None:
        y = np.zeros(tuple(model(x).shape), "float32")
    trained = model.trainable_weights if trained is None else trained
    frozen = model.non_trainable_weights
    before = {id(v): to_numpy(v).copy() for v in list(trained) + frozen}
    model.compile(
        optimizer=keras.optimizers.SGD(0.1), loss=loss, jit_compile=jit_compile()
    )
    history = model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]), history.history
    for v in trained:
        after = to_numpy(v)
        assert np.all(np.isfinite(after)), v.path
        assert not np.array_equal(after, before[id(v)]), f"{v.path} did not train"
    for v in frozen:
        if not _updated_without_gradient(v):
            assert np.array_equal(to_numpy(v), before[id(v)]), f"{v.path} trained"
    return history


def _updated_without_gradient(variable):
    # BatchNormalization's moving statistics and the seed generators' states
    # are non-trainable but change during fit.
    return "moving_" in variable.path or "seed_generator" in variable.path


def run_model_test(model, x, y=None, loss="mse", trained=None, tolerance=1e-6):
    """Eager and symbolic call, a `.keras` round trip and one fit step.

    Args:
        model: a built Keras model (Functional or Sequential).
        x: an input batch.
        y: targets for the fit step. Defaults to zeros of the output shape.
        loss: the fit step's loss. Defaults to `"mse"`.
        trained: weights the fit step must change. Defaults to the model's
            trainable weights.
        tolerance: `rtol` and `atol` of the reload comparison.

    Returns:
        The model loaded back from its `.keras` file.
    """
    eager = model(x, training=False)
    assert np.all(np.isfinite(to_numpy(eager)))
    symbolic = model(keras.KerasTensor((None,) + tuple(x.shape[1:])))
    assert tuple(symbolic.shape)[1:] == tuple(eager.shape)[1:]
    loaded = check_save_and_load(model, x, tolerance)
    check_fit_step(model, x, y, loss, trained)
    return loaded


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    input_data=None,
    expected_output_shape=None,
    expected_num_trainable_weights=None,
    expected_num_losses=None,
    run_training_check=True,
    run_mixed_precision_check=True,
    run_saving_check=True,
    tolerance=1e-6,
):
    """The checks every layer gets, after Keras' `run_layer_test`.

    Args:
        layer_cls: the layer class.
        init_kwargs: keyword arguments of the constructor.
        input_shape: the input shape, batch included (e.g. `(2, 8, 8, 3)`).
        input_data: an input batch. Defaults to standard-normal data of
            `input_shape` (seed 0).
        expected_output_shape: the output shape for `input_shape`. Defaults
            to `input_shape`.
        expected_num_trainable_weights: checked when given.
        expected_num_losses: losses added by one call; checked when given.
        run_training_check: run one jit-compiled fit step. Defaults to True.
        run_mixed_precision_check: call under `mixed_float16` and
            `mixed_bfloat16`. Defaults to True.
        run_saving_check: `.keras` round trip under `safe_mode=True`, with a
            frozen layer in front. Defaults to True.
        tolerance: `rtol` and `atol` of the reload comparison.
    """
    input_shape = tuple(input_shape)
    if input_data is None:
        input_data = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    expected_output_shape = tuple(expected_output_shape or input_shape)

    # Config round trip, directly and through JSON.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    assert layer_cls.from_config(config).get_config() == config
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is layer_cls
    assert restored.get_config() == config

    # Symbolic call.
    symbolic = layer_cls(**init_kwargs)
    out = symbolic(keras.KerasTensor((None,) + input_shape[1:]))
    assert tuple(out.shape) == (None,) + expected_output_shape[1:]
    assert tuple(symbolic.compute_output_shape(input_shape)) == expected_output_shape

    # Eager call.
    eager = layer_cls(**init_kwargs)
    out = eager(input_data)
    assert tuple(out.shape) == expected_output_shape
    assert np.all(np.isfinite(to_numpy(out)))
    if expected_num_trainable_weights is not None:
        assert len(eager.trainable_weights) == expected_num_trainable_weights
    if expected_num_losses is not None:
        assert len(eager.losses) == expected_num_losses
    for loss in eager.losses:
        assert np.isfinite(float(to_numpy(loss)))

    if run_mixed_precision_check:
        for policy in MIXED_POLICIES:
            mixed = layer_cls(**{**init_kwargs, "dtype": policy})
            out = mixed(keras.ops.cast(input_data, mixed.compute_dtype))
            assert keras.backend.standardize_dtype(out.dtype) == mixed.compute_dtype
            for w in mixed.weights:
                assert keras.backend.standardize_dtype(w.dtype) == "float32"
            assert np.all(np.isfinite(to_numpy(keras.ops.cast(out, "float32"))))
            for loss in mixed.losses:
                assert np.isfinite(float(to_numpy(loss)))

    if run_training_check or run_saving_check:
        # A frozen layer in front: its flag must survive saving and fitting.
        inputs = keras.Input(input_shape[1:])
        front = keras.layers.Dense(input_shape[-1], name="frozen_front")
        front.trainable = False
        layer = layer_cls(**init_kwargs)
        model = keras.Model(inputs, layer(front(inputs)))
        if run_saving_check:
            check_save_and_load(model, input_data, tolerance)
        if run_training_check:
            check_fit_step(model, input_data, trained=layer.trainable_weights)


def check_figure(figure):
    """A matplotlib `Figure` with at least one Axes that drew something
    (lines, bars, images or collections); closes it."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    assert isinstance(figure, Figure), type(figure)
    try:
        drawn = [
            ax
            for ax in figure.axes
            if ax.lines or ax.patches or ax.images or ax.collections
        ]
        assert drawn, "the figure has no Axes with content"
    finally:
        plt.close(figure)
