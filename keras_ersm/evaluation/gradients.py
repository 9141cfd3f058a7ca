"""Grad-CAM, the one place with backend-specific code (gradients).

`keras.ops` has no gradient operation, so this module holds one small
function per backend that returns the gradient of the summed class scores
with respect to a feature map. Each imports its backend lazily.
"""

import keras
import numpy as np

from keras_ersm.evaluation import _data, _graph, _progress


def _select(outputs, classes):
    from keras import ops

    outputs = ops.reshape(outputs, (ops.shape(outputs)[0], -1))
    if outputs.shape[-1] == 1:
        return ops.sum(outputs)
    one_hot = ops.one_hot(classes, outputs.shape[-1], dtype=outputs.dtype)
    return ops.sum(outputs * one_hot)


def _jax_gradients(fn, x, classes):
    import jax

    return jax.grad(lambda value: _select(fn(value), classes))(x)


def _tensorflow_gradients(fn, x, classes):
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = _select(fn(x), classes)
    return tape.gradient(score, x)


def _torch_gradients(fn, x, classes):
    import torch

    x = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
    with torch.enable_grad():
        score = _select(fn(x), classes)
        (grad,) = torch.autograd.grad(score, x)
    return grad


_GRADIENTS = {
    "jax": _jax_gradients,
    "tensorflow": _tensorflow_gradients,
    "torch": _torch_gradients,
}


def class_gradients(fn, x, classes):
    """Gradient of `sum_b fn(x)[b, classes[b]]` with respect to `x`.

    Args:
        fn: callable from a tensor to class scores `(B, num_classes)`.
        x: input tensor (numpy array).
        classes: int array `(B,)`.

    Returns:
        Numpy array, same shape as `x`.
    """
    backend = keras.backend.backend()
    if backend not in _GRADIENTS:
        raise ValueError(
            f"Grad-CAM supports the jax, tensorflow and torch backends. "
            f"Received: backend={backend!r}"
        )
    x = keras.ops.convert_to_tensor(np.asarray(x))
    classes = keras.ops.convert_to_tensor(np.asarray(classes, dtype="int32"))
    return _data.to_numpy(_GRADIENTS[backend](fn, x, classes))


def cam_from_gradients(features, gradients, data_format):
    """Grad-CAM map `relu(sum_c mean_hw(grad)_c * A_c)`, shape `(B, h, w)`."""
    features = np.asarray(features, dtype="float32")
    gradients = np.asarray(gradients, dtype="float32")
    if data_format == "channels_first":
        features = np.moveaxis(features, 1, -1)
        gradients = np.moveaxis(gradients, 1, -1)
    weights = gradients.mean(axis=(1, 2), keepdims=True)
    return np.maximum((weights * features).sum(axis=-1), 0.0)


def head_cam(head, features, cuts, classes, data_format):
    """Grad-CAM of `head([features, *cuts])` at `features`."""
    cuts = [keras.ops.convert_to_tensor(c) for c in cuts]

    def fn(value):
        return head([value, *cuts], training=False)

    gradients = class_gradients(fn, features, classes)
    return cam_from_gradients(features, gradients, data_format)


def _check_classes(classes, head):
    """Integer classes within the model's output units."""
    classes = np.asarray(classes)
    if classes.dtype == bool or not np.issubdtype(classes.dtype, np.integer):
        if not (
            np.issubdtype(classes.dtype, np.floating)
            and np.all(np.isfinite(classes))
            and np.all(classes == np.round(classes))
        ):
            raise _graph.invalid_type(
                "classes", "an integer array (B,) of class indices", classes
            )
    classes = classes.reshape(-1).astype("int64")
    units = head.outputs[0].shape[-1]
    # A one-unit output explains its single score for class 0 or 1.
    limit = None if units is None else max(int(units), 2)
    if len(classes) and (
        classes.min() < 0 or (limit is not None and classes.max() >= limit)
    ):
        raise _graph.invalid(
            "classes",
            f"class indices in [0, {limit})" if limit else "non-negative indices",
            classes,
        )
    return classes


def grad_cam(model, images, layer=None, classes=None, batch_size=32, verbose=0):
    """Grad-CAM maps of a classifier at one layer.

    The model is split at `layer` (nested Functional backbones included);
    the gradient of the chosen class score with respect to the layer's
    output `A` weights its channels, `cam = relu(sum_c mean_hw(dS/dA_c) A_c)`
    (Selvaraju et al., 2017). Works on the jax, tensorflow and torch
    backends.

    At an `EnergyMask` followed by global average pooling and a `Dense`
    layer the gradient is the same at every position, so the map at the
    mask's output is the keep map times the class activation map of the
    mask's input: it contains the keep map. At the layer before the mask
    the gradient also flows through the mask's scores, so that map depends
    on the mask too; compare the keep map with the baseline's Grad-CAM
    (docs/guides/evaluation.md, "Localization").

    Args:
        model: a Functional or Sequential Keras classifier.
        images: model inputs, an array `(B, ...)`.
        layer: name or instance of a layer with a 4-D output, or `None` for
            the model's last `EnergyMask` layer (its masked output). Defaults
            to `None`.
        classes: int array `(B,)` of the classes to explain, each in
            `[0, num_classes)`, or `None` for the predicted classes.
            Defaults to `None`.
        batch_size: images per forward and backward pass. Defaults to `32`.
        verbose: `0` (silent), `1` or `"auto"` (a `keras.utils.Progbar`
            per batch, as `model.evaluate` shows) or `2` (one line at the
            end). Defaults to `0`.

    Returns:
        Numpy float32 array `(B, h, w)` at the layer's resolution,
        non-negative and not normalised.

    Examples:

    ```python
    import numpy as np
    import keras
    import keras_ersm

    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    h = keras_ersm.EnergyMask(name="mask")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    images = np.random.rand(2, 16, 16, 3).astype("float32")
    cam = keras_ersm.evaluation.grad_cam(model, images)
    assert cam.shape == (2, 16, 16)
    ```
    """
    _data.check_batch_size(batch_size)
    if layer is None:
        if isinstance(model, keras.Model) and not _graph.energy_mask_layers(model):
            raise ValueError(
                "Invalid value for argument `layer`. Model "
                f"{model.name!r} has no EnergyMask layer to default to; pass "
                "the name of a layer with a 4-D output, e.g. the last "
                "convolution. Received: layer=None"
            )
        target = _graph.resolve_mask_layer(model)
    else:
        target = _graph.find_layer(model, layer)
    split = _graph.cached_split("output", model, target)
    data_format = _graph.layer_data_format(target)
    if classes is not None:
        classes = _check_classes(classes, split.head)
    maps, offset = [], 0
    batches = _data.iter_batches(images, batch_size, labels=False, model=model)
    for x, _ in _progress.track(batches, images, batch_size, verbose):
        count = _data.batch_size_of(x)
        if not count:
            continue  # An empty batch of an iterable, as `keep_maps` skips.
        outs = split.first.predict_on_batch(x)
        features, cuts = outs["features"], split.cuts(outs)
        if classes is None:
            predicted = split.head.predict_on_batch([features, *cuts])
            batch_classes = _data.predictions_to_classes(predicted)
        else:
            batch_classes = classes[offset : offset + count]
            if len(batch_classes) != count:
                raise _graph.invalid(
                    "classes", "one class per image", f"array of length {len(classes)}"
                )
        maps.append(head_cam(split.head, features, cuts, batch_classes, data_format))
        offset += count
    if not maps:
        raise _graph.invalid("images", "at least one image", "no images")
    if classes is not None and offset != len(classes):
        raise _graph.invalid(
            "classes",
            f"one class per image ({offset} images)",
            f"array of length {len(classes)}",
        )
    return np.concatenate(maps, axis=0).astype("float32")
