"""Reading the keep maps and energy terms of a model's EnergyMask layers."""

import keras
import numpy as np

from keras_ersm import _validation
from keras_ersm.layers.energy_mask import EnergyMask
from keras_ersm.models import insertion
from keras_ersm.models.utils import energy_mask_layers


def _select(model, layer):
    masks = energy_mask_layers(model)
    if not masks:
        raise ValueError(
            "Invalid value for argument `model`. Expected a model with at "
            f"least one EnergyMask layer. Received: model={model.name!r}, "
            "which has none; add masks with "
            "`keras_ersm.models.insert_energy_masks`."
        )
    if layer is None:
        return masks
    for mask in masks:
        if mask is layer or (isinstance(layer, str) and mask.name == layer):
            return [mask]
    if not isinstance(layer, (str, EnergyMask)):
        raise TypeError(
            "Invalid value for argument `layer`. Expected the name of an "
            f"EnergyMask layer, an EnergyMask layer or None. Received: "
            f"layer={layer!r}"
        )
    raise ValueError(
        "Invalid value for argument `layer`. Expected one of the model's "
        f"EnergyMask layers {[m.name for m in masks]}. Received: "
        f"layer={getattr(layer, 'name', layer)!r}"
    )


def _single_node(graph, layer):
    nodes = insertion._layer_nodes(graph, layer)
    if len(nodes) != 1:
        raise ValueError(
            f"Layer {layer.name!r} is called {len(nodes)} times in model "
            f"{graph.name!r}; keep maps can only be read for a layer called "
            "once."
        )
    return nodes[0]


def _mask_input(graph, mask):
    """Returns the symbolic tensor, in `graph`'s frame, fed to `mask`."""
    if insertion._layer_nodes(graph, mask):
        return _single_node(graph, mask).input_tensors[0]
    for layer in graph.layers:
        if insertion._is_functional(layer) and any(
            m is mask for m in energy_mask_layers(layer)
        ):
            inner = keras.Model(layer.input, _mask_input(layer, mask))
            node = _single_node(graph, layer)
            args = node.arguments.args
            return inner(args[0] if args else node.input_tensors)
    raise ValueError(
        f"EnergyMask {mask.name!r} is not reachable through the Functional "
        f"graph of model {graph.name!r} (it may sit in a Sequential or "
        "subclassed sub-model)."
    )


def _num_samples(x):
    leaves = keras.tree.flatten(x)
    if not leaves or not all(hasattr(leaf, "shape") for leaf in leaves):
        raise _validation.invalid_type("x", "input arrays", x)
    count = int(leaves[0].shape[0]) if len(leaves[0].shape) else 0
    if count == 0:
        raise _validation.invalid(
            "x", "at least one image", f"array of shape {tuple(leaves[0].shape)}"
        )
    return count


def _as_functional(model):
    """A Functional view of a built Sequential model (same layers)."""
    if isinstance(model, keras.Sequential):
        try:
            inputs, outputs = model.inputs, model.outputs
        except (AttributeError, ValueError):
            inputs = outputs = None
        if not inputs or not outputs:
            raise _validation.invalid(
                "model",
                "a Functional model or a Sequential model built on a "
                "`keras.Input`",
                model.name,
            )
        return keras.Model(
            inputs[0] if len(inputs) == 1 else inputs,
            outputs[0] if len(outputs) == 1 else outputs,
            name=model.name,
        )
    insertion.check_functional(model)
    return model


def energy_terms(model, x, layer=None, batch_size=32):
    """Computes the per-token terms of a model's EnergyMask layers.

    The model is cut at the input of each `EnergyMask` (a Functional probe
    built once, nested models included), run on `x` in batches with
    `training=False`, and each layer's `energy_terms` is evaluated on its
    features. No custom model needs to be written.

    Args:
        model: a Functional model (or a Sequential model built on a
            `keras.Input`) holding `EnergyMask` layers, e.g. from
            `insert_energy_masks` or `build_classifier`.
        x: model inputs (a NumPy array or tensor, or the structure the model
            takes).
        layer: name of an `EnergyMask` layer, the layer itself, or `None`
            for all of them. Defaults to `None`.
        batch_size: int >= 1, images per forward pass. Defaults to `32`.

    Returns:
        For one `layer`: dict of NumPy float32 arrays of shape
        `(N, gh, gw)`: `"scores"`, `"keep"`, `"redundancy"` and, when the
        layer has a regularizer, `"energy"`. For `layer=None`: dict layer
        name -> such a dict.

    Examples:

    ```python
    import numpy as np
    import keras
    import keras_ersm

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    model = keras_ersm.models.insert_energy_masks(keras.Model(inputs, x), "conv")
    terms = keras_ersm.models.energy_terms(
        model, np.random.rand(5, 16, 16, 3), layer="conv_energy_mask")
    assert terms["keep"].shape == (5, 16, 16)
    ```
    """
    model = _as_functional(model)
    batch_size = _validation.check_int("batch_size", batch_size, 1)
    masks = _select(model, layer)
    features = [_mask_input(model, mask) for mask in masks]
    probe = keras.Model(model.input, features)
    count = _num_samples(x)
    chunks = {mask.name: {} for mask in masks}
    for start in range(0, count, batch_size):
        batch = keras.tree.map_structure(lambda a, s=start: a[s : s + batch_size], x)
        outputs = probe(batch, training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        for mask, feature in zip(masks, outputs, strict=True):
            terms = mask.energy_terms(feature)
            for key, value in terms.items():
                chunks[mask.name].setdefault(key, []).append(
                    np.asarray(keras.ops.convert_to_numpy(value), "float32")
                )
    result = {
        name: {key: np.concatenate(parts) for key, parts in terms.items()}
        for name, terms in chunks.items()
    }
    if layer is not None:
        return result[masks[0].name]
    return result


def keep_maps(model, x, layer=None, batch_size=32):
    """Returns the keep maps of a model's EnergyMask layers for a batch.

    A shortcut for `energy_terms(...)["keep"]`, for plots and evaluation.

    Args:
        model: a Functional model (or a Sequential model built on a
            `keras.Input`) holding `EnergyMask` layers.
        x: model inputs (a NumPy array or tensor, or the structure the model
            takes).
        layer: name of an `EnergyMask` layer, the layer itself, or `None`
            for all of them. Defaults to `None`.
        batch_size: int >= 1, images per forward pass. Defaults to `32`.

    Returns:
        For one `layer`: a NumPy float32 array `(N, gh, gw)` of keep
        probabilities in [0, 1]. For `layer=None`: dict layer name -> array.

    Examples:

    ```python
    import numpy as np
    import keras
    import keras_ersm

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    model = keras_ersm.models.build_classifier(keras.Model(inputs, x), 3)
    maps = keras_ersm.models.keep_maps(model, np.random.rand(5, 16, 16, 3))
    assert maps["conv_energy_mask"].shape == (5, 16, 16)
    ```
    """
    terms = energy_terms(model, x, layer=layer, batch_size=batch_size)
    if layer is not None:
        return terms["keep"]
    return {name: values["keep"] for name, values in terms.items()}
