"""Reading the keep maps and energy terms of a model's EnergyMask layers.

`keep_maps` is the one keep-map reader of the package: the evaluation
functions, the callbacks and the plots call it (see the data-flow table of
[Architecture](../../docs/architecture.md)).
"""

import keras
import numpy as np
from keras import ops

from keras_ersm import _validation
from keras_ersm import ops as ersm_ops
from keras_ersm.evaluation import _data, _progress
from keras_ersm.layers.energy_mask import EnergyMask
from keras_ersm.models import graph
from keras_ersm.models.utils import energy_mask_layers


class MaskTerms(keras.layers.Layer):
    """`EnergyMask.energy_terms` as a layer (dict of `(B, gh, gw)` tensors).

    With `norms=True` the dict also holds `"norms"`, the tokens' norms. The
    mask layer is tracked (a sublayer), so its weights are part of the
    state of any model built on this layer: JAX's `predict` passes a
    model's tracked variables into the compiled function, and an untracked
    variable would be frozen into it at its value on the first call (keep
    maps read again after more training would not change).
    """

    def __init__(self, mask_layer, norms=False, **kwargs):
        super().__init__(**kwargs)
        self.mask_layer = mask_layer
        self._norms = norms

    def call(self, features):
        terms = dict(self.mask_layer.energy_terms(features))
        if self._norms:
            terms["norms"] = ersm_ops.token_norms(self.mask_layer._tokens(features))
        return {key: ops.cast(value, "float32") for key, value in terms.items()}


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


def _probe(model, masks):
    """inputs -> {mask name: energy terms}, traced once through `graph`."""
    wanted = {id(mask): mask for mask in masks}
    terms = {}

    def call(layer, *args, **kwargs):
        if id(layer) in wanted:
            if layer.name in terms:
                raise ValueError(
                    f"Layer {layer.name!r} is called more than once in model "
                    f"{model.name!r}; keep maps can only be read for a layer "
                    "called once."
                )
            features = args[0] if args else kwargs["inputs"]
            terms[layer.name] = MaskTerms(layer, norms=True)(features)
        return layer(*args, **kwargs)

    def descend(layer):
        return any(graph.contains(layer, mask) for mask in masks)

    inputs, _ = graph.trace(model, call, descend)
    missing = [mask.name for mask in masks if mask.name not in terms]
    if missing:
        raise ValueError(
            f"EnergyMask {missing[0]!r} is not reachable through the graph "
            f"of model {model.name!r} (it may sit in a subclassed sub-model)."
        )
    return keras.Model(inputs, terms)


def _read_terms(model, x, layer, batch_size, verbose, argument="x"):
    """dict mask name -> dict term -> NumPy float32 `(N, gh, gw)`.

    Data errors name `argument`, the caller's parameter that holds `x`.
    """
    graph.functional(model)
    batch_size = _validation.check_int("batch_size", batch_size, 1)
    verbose = _progress.check_verbose(verbose)
    masks = _select(model, layer)
    key = ("terms", tuple(id(mask) for mask in masks))
    probe = graph.cached(model, key, lambda: _probe(model, masks))
    chunks = {mask.name: {} for mask in masks}
    batches = _data.iter_batches(
        x, batch_size, labels=False, model=model, argument=argument
    )
    for batch, _ in _progress.track(batches, x, batch_size, verbose):
        if not _data.batch_size_of(batch):
            continue
        outputs = probe.predict_on_batch(batch)
        for name, terms in outputs.items():
            for term, value in terms.items():
                chunks[name].setdefault(term, []).append(np.asarray(value, "float32"))
    if not chunks[masks[0].name]:
        raise _validation.invalid(argument, "at least one image", _data._describe(x))
    return {
        name: {term: np.concatenate(parts) for term, parts in terms.items()}
        for name, terms in chunks.items()
    }


def energy_terms(model, x, layer=None, batch_size=32, verbose=0):
    """Computes the per-token terms of a model's EnergyMask layers.

    The model is cut at the input of each `EnergyMask` (a Functional probe
    built once per model, nested models included) and each layer's
    `energy_terms` is evaluated on its features, batch by batch with
    `training=False`. No custom model needs to be written.

    Args:
        model: a Functional model (or a Sequential model built on a
            `keras.Input`) holding `EnergyMask` layers, e.g. from
            `insert_energy_masks` or `build_classifier`.
        x: model inputs (a NumPy array or tensor, or the structure the model
            takes), `(x, y)` arrays (labels ignored), a `tf.data.Dataset`,
            an iterable of batches or a `keras.utils.PyDataset`: what
            `model.evaluate` accepts.
        layer: name of an `EnergyMask` layer, the layer itself, or `None`
            for all of them. Defaults to `None`.
        batch_size: int >= 1, images per forward pass (arrays only).
            Defaults to `32`.
        verbose: `0` (silent), `1` or `"auto"` (a progress bar per batch)
            or `2` (one line at the end), as in `model.evaluate`. Defaults
            to `0`.

    Returns:
        For one `layer`: dict of NumPy float32 arrays of shape
        `(N, gh, gw)`: `"scores"`, `"keep"`, `"redundancy"`, `"norms"`
        (the norm `||x_i||` of each token of the layer's input; `keep *
        norms` is what the mask lets through, the "kept" map of
        `keras_ersm.evaluation`) and, when the layer has a regularizer,
        `"energy"`. For `layer=None`: dict layer name -> such a dict.

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
    result = _read_terms(model, x, layer, batch_size, verbose)
    if layer is not None:
        return next(iter(result.values()))
    return result


def keep_maps(model, x, layer=None, batch_size=32, verbose=0):
    """Returns the keep maps of a model's EnergyMask layers for a batch.

    A shortcut for `energy_terms(...)["keep"]`, for plots and evaluation.

    Args:
        model: a Functional or Sequential model with `EnergyMask` layers.
        x: the images, in any form `model.evaluate` accepts (see
            `energy_terms`).
        layer: an `EnergyMask` layer or its name; `None` for all.
            Defaults to `None`.
        batch_size: images per forward pass. Defaults to `32`.
        verbose: `0`, `1`, `"auto"` or `2`, as in `model.evaluate`.
            Defaults to `0`.

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
    terms = energy_terms(model, x, layer, batch_size, verbose)
    if layer is not None:
        return terms["keep"]
    return {name: values["keep"] for name, values in terms.items()}
