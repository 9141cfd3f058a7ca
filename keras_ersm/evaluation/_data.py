"""Data handling shared by the evaluation functions (internal).

`iter_batches` turns whatever `model.evaluate` accepts into numpy batches:
an `(x, y)` (or `(x, y, sample_weight)`) tuple of arrays, a `tf.data.Dataset`
or any iterable of such tuples (e.g. a torch `DataLoader`), or a
`keras.utils.PyDataset`.
"""

import keras
import numpy as np

from keras_ersm._validation import invalid


def to_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    return keras.ops.convert_to_numpy(value)


def _describe(data):
    shape = getattr(data, "shape", None)
    if shape is not None:
        return f"{type(data).__name__} of shape {tuple(shape)}"
    return repr(data)[:200]


def _is_array(value):
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _is_inputs(value):
    if _is_array(value):
        return True
    if isinstance(value, dict):
        return all(_is_array(v) for v in value.values())
    if isinstance(value, list) and value:
        return all(_is_array(v) for v in value)
    return False


def _split_item(item, data, labels, argument="data"):
    if isinstance(item, tuple) and len(item) in (2, 3):
        x, y = item[0], item[1]
    else:
        x, y = item, None
    if labels and y is None:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected labelled data: "
            "`(x, y)` arrays, or a dataset / PyDataset yielding `(x, y)` "
            f"batches. Received: {argument}={_describe(data)} without labels"
        )
    x = keras.tree.map_structure(to_numpy, x)
    return x, (None if y is None else to_numpy(y))


def _check_label_count(num, y, argument="data"):
    count = len(y) if np.ndim(y) else 1
    if count != num:
        raise invalid(
            argument,
            "as many labels as images",
            f"{num} images and {count} labels",
        )


def _check_rank(x, model, data, argument="data"):
    """A clear error for unbatched examples (e.g. a tf.data.Dataset without
    `.batch(...)`): inputs one dimension short of the model's input."""
    inputs = getattr(model, "inputs", None)
    leaves = keras.tree.flatten(x)
    if not inputs or len(inputs) != 1 or len(leaves) != 1:
        return
    expected = len(inputs[0].shape)
    if len(leaves[0].shape) != expected:
        hint = (
            "The data yields single examples: batch it (e.g. `dataset.batch(32)`)"
            if len(leaves[0].shape) == expected - 1
            else ""
        )
        raise invalid(
            argument,
            f"batches of {expected}-D inputs, like the model's input "
            f"{tuple(inputs[0].shape)}",
            f"{_describe(data)} yielding inputs of shape {tuple(leaves[0].shape)}",
            hint,
        )


def iter_batches(data, batch_size, labels=True, model=None, argument="data"):
    """Yields `(x, y)` numpy batches (`y` is None when `labels=False`).

    With `model`, each batch's inputs are checked to have the rank of the
    model's input (a clear error for unbatched datasets). Labels are checked
    to be one per image. Errors name `argument`, the caller's parameter.
    """
    for x, y in _iter_batches(data, batch_size, labels, argument):
        if model is not None:
            _check_rank(x, model, data, argument)
        if labels and y is not None:
            _check_label_count(batch_size_of(x), y, argument)
        yield x, y


def _iter_batches(data, batch_size, labels, argument="data"):
    if isinstance(data, tuple) and len(data) in (2, 3) and _is_inputs(data[0]):
        x, y = data[0], data[1]
        if labels and y is None:
            _split_item((x,), data, labels, argument)
        num = len(keras.tree.flatten(x)[0])
        if labels:
            _check_label_count(num, y, argument)
        for start in range(0, num, batch_size):
            part = keras.tree.map_structure(lambda a, s=start: a[s : s + batch_size], x)
            yield _split_item(
                (part, None if y is None else y[start : start + batch_size]),
                data,
                labels,
                argument,
            )
        return
    if _is_inputs(data):
        if labels:
            _split_item(data, data, labels, argument)
        num = len(keras.tree.flatten(data)[0])
        for start in range(0, num, batch_size):
            yield (
                keras.tree.map_structure(
                    lambda a, s=start: to_numpy(a[s : s + batch_size]), data
                ),
                None,
            )
        return
    if isinstance(data, keras.utils.PyDataset):
        num = data.num_batches
        if num is None:
            num = len(data)
        for index in range(num):
            yield _split_item(data[index], data, labels, argument)
        return
    if hasattr(data, "as_numpy_iterator"):
        iterator = data.as_numpy_iterator()
    elif hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict)):
        iterator = iter(data)
    else:
        raise invalid(
            argument,
            "(x, y) arrays, a tf.data.Dataset, a keras.utils.PyDataset or an "
            "iterable of (x, y) batches",
            data,
        )
    for item in iterator:
        yield _split_item(item, data, labels, argument)


def batch_size_of(x):
    return len(keras.tree.flatten(x)[0])


def labels_to_classes(y):
    """Sparse integer labels from sparse or one-hot labels."""
    y = np.asarray(y)
    if y.ndim >= 2 and y.shape[-1] > 1:
        return np.argmax(y, axis=-1).reshape(-1)
    return y.reshape(-1).astype("int64")


def predictions_to_classes(predictions, threshold=0.5):
    """Predicted classes: argmax, or `p > threshold` for one output unit.

    `threshold` is `output_threshold(model)`: 0.5 for probabilities, 0 for
    logits.
    """
    predictions = to_numpy(predictions)
    if predictions.ndim >= 2 and predictions.shape[-1] > 1:
        return np.argmax(predictions, axis=-1).reshape(-1)
    return (predictions.reshape(-1) > threshold).astype("int64")


_PROBABILITY_ACTIVATIONS = ("sigmoid", "hard_sigmoid", "softmax", "log_softmax")


def _output_layer(model):
    """The layer whose output is the model's single output, or None."""
    outputs = getattr(model, "outputs", None)
    if not outputs or len(outputs) != 1:
        return None
    for layer in reversed(getattr(model, "layers", None) or []):
        try:
            output = layer.output
        except (AttributeError, ValueError, RuntimeError):
            continue
        if output is outputs[0]:
            return layer
    return None


def output_threshold(model):
    """Decision threshold of a one-unit output: 0 for logits, 0.5 otherwise.

    Read from the model's final layer: a `sigmoid` (or `softmax`) activation
    means probabilities (threshold 0.5); any other activation of a layer
    that has one (`None`/`"linear"`, as `build_classifier` makes by default)
    means logits (threshold 0). When the final layer cannot be found or has
    no activation (a subclassed model, a `Reshape` after the head),
    probabilities are assumed.
    """
    layer = _output_layer(model)
    while isinstance(layer, keras.Model):
        layer = _output_layer(layer)
    if layer is None:
        return 0.5
    if isinstance(layer, keras.layers.Softmax):
        return 0.5
    activation = getattr(layer, "activation", None)
    if activation is None:
        return 0.5
    name = getattr(activation, "__name__", None) or str(activation)
    return 0.5 if name in _PROBABILITY_ACTIVATIONS else 0.0


def check_batch_size(batch_size, name="batch_size"):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise invalid(name, "a positive integer", batch_size)
    if batch_size < 1:
        raise invalid(name, "a positive integer", batch_size)
    return batch_size


def trapezoid(y, x):
    """Trapezoid rule (numpy 1 and 2 compatible)."""
    y = np.asarray(y, dtype="float64")
    x = np.asarray(x, dtype="float64")
    if len(x) < 2:
        return 0.0
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
