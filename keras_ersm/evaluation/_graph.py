"""Splitting a Functional model at one layer (internal).

The evaluation functions run the part of a model before a layer once and the
part after it many times. `split_model` re-traces the model's graph
symbolically, descending into nested Functional and Sequential models that
contain the layer (a backbone used as a layer of a classifier), and returns
two flat Functional models that share the original layers and weights:

- `first`: model inputs -> `[features, *extra, *cuts]`;
- `second`: `[features, *second_inputs, *cuts] -> output`.

`cuts` are the tensors computed before the layer that the part after it
still needs (skip connections around the layer). The models are cached per
(model, layer, mode), so callbacks do not re-trace every epoch.
"""

import weakref

import keras
from keras import ops

from keras_ersm import ops as ersm_ops
from keras_ersm._validation import invalid, invalid_type  # noqa: F401
from keras_ersm.layers.energy_mask import EnergyMask
from keras_ersm.models.utils import energy_mask_layers

_CACHE = weakref.WeakKeyDictionary()


def _walk(layer, seen=None):
    seen = set() if seen is None else seen
    if id(layer) in seen:
        return
    seen.add(id(layer))
    yield layer
    for child in getattr(layer, "layers", None) or []:
        yield from _walk(child, seen)


def _contains(model, target):
    return any(layer is target for layer in _walk(model))


def find_layer(model, layer, argument="layer"):
    """Resolves a layer name or instance inside `model` (nested included)."""
    if isinstance(layer, keras.layers.Layer):
        if not _contains(model, layer):
            raise invalid(argument, f"a layer of model {model.name!r}", layer.name)
        return layer
    if not isinstance(layer, str):
        raise invalid(argument, "a layer name or a Keras layer", layer)
    for candidate in _walk(model):
        if candidate is not model and candidate.name == layer:
            return candidate
    raise invalid(argument, f"the name of a layer of model {model.name!r}", layer)


def resolve_mask_layer(model, layer=None):
    """Returns the `EnergyMask` layer to evaluate, with clear errors."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Invalid value for argument `model`. Expected a Keras model. "
            f"Received: model={model!r}"
        )
    masks = energy_mask_layers(model)
    if not masks:
        raise ValueError(
            f"Invalid value for argument `model`. Model {model.name!r} has no "
            "EnergyMask layer. Add one with "
            "`keras_ersm.models.insert_energy_masks(model, at=...)` or build "
            "the model with `keras_ersm.models.build_classifier(...)`. "
            f"Received: model={model.name!r}"
        )
    if layer is None:
        return masks[-1]
    found = find_layer(model, layer)
    if not isinstance(found, EnergyMask):
        names = [m.name for m in masks]
        raise ValueError(
            "Invalid value for argument `layer`. Expected the name of an "
            f"EnergyMask layer of the model, one of {names}. Received: "
            f"layer={found.name!r} (a {type(found).__name__})"
        )
    return found


def _graph_of(model):
    """The Functional graph that runs `model`, or None."""
    if isinstance(model, keras.Sequential):
        model = getattr(model, "_functional", None)
    if model is not None and hasattr(model, "_run_through_graph"):
        if hasattr(model, "_nodes_by_depth"):
            return model
    return None


def _unpack(outputs):
    if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
        return outputs[0]
    return outputs


class _Tile(keras.layers.Layer):
    """Repeats `x` along the batch axis to the batch size of `reference`."""

    def call(self, x, reference):
        reps = ops.shape(reference)[0] // ops.shape(x)[0]
        return ops.tile(x, [reps] + [1] * (len(x.shape) - 1))

    def compute_output_shape(self, x_shape, reference_shape):
        return (None,) + tuple(x_shape[1:])


class _MaskedFeatures(keras.layers.Layer):
    """`EnergyMask.apply_keep` with the features tiled to the keep's batch.

    Rows of `keep` are ordered step-major: row `s * B + b` is image `b`.
    With `replace=True` the keep map is applied without rescaling (the
    reference deletion protocol).
    """

    def __init__(self, mask_layer, replace, **kwargs):
        super().__init__(**kwargs)
        # Bound methods and plain values are not tracked as sublayers.
        self._apply_keep = mask_layer.apply_keep
        self._patch_size = mask_layer.patch_size
        self._data_format = mask_layer.data_format
        self._padding = mask_layer.padding
        self._rescale = mask_layer.rescale
        self._replace = replace

    def call(self, features, keep):
        reps = ops.shape(keep)[0] // ops.shape(features)[0]
        features = ops.tile(features, [reps, 1, 1, 1])
        if not self._replace or not self._rescale:
            return self._apply_keep(features, keep)
        keep = ersm_ops.upsample_tokens(ops.cast(keep, "float32"), self._patch_size)
        axis = 1 if self._data_format == "channels_first" else -1
        spatial = (2, 3) if axis == 1 else (1, 2)
        shape = ops.shape(features)
        keep = keep[:, : shape[spatial[0]], : shape[spatial[1]]]
        return features * ops.expand_dims(ops.cast(keep, features.dtype), axis)

    def compute_output_shape(self, features_shape, keep_shape):
        return (None,) + tuple(features_shape[1:])


class _TokenTerms(keras.layers.Layer):
    """The mask layer's scores and keep, plus token norms, as outputs."""

    def __init__(self, mask_layer, **kwargs):
        super().__init__(**kwargs)
        self._energy_terms = mask_layer.energy_terms
        self._tokens = mask_layer._tokens

    def call(self, features):
        terms = self._energy_terms(features)
        norms = ersm_ops.token_norms(self._tokens(features))
        return terms["scores"], terms["keep"], norms


class _Tracer:
    """Re-applies a model's layers symbolically, flattening nested models."""

    def __init__(self, target, replace):
        self.target = target
        self.replace = replace
        self.dependent = set()
        self.cuts = []
        self.cut_ids = set()
        self.reference = None
        self.result = None

    def run(self, graph, inputs):
        return graph._run_through_graph(
            inputs, operation_fn=lambda op: op, call_fn=self.call
        )

    def call(self, op, *args, **kwargs):
        flat = [
            t
            for t in keras.tree.flatten((args, kwargs))
            if isinstance(t, keras.KerasTensor)
        ]
        if op is self.target:
            if self.result is not None:
                raise ValueError(
                    f"Layer {op.name!r} is called more than once in the model; "
                    "the evaluation needs a layer that is called once."
                )
            self.result, outputs, self.reference = self.replace(op, args, kwargs)
            self._mark(outputs)
            return outputs
        graph = _graph_of(op) if op is not self.target else None
        if graph is not None and _contains(op, self.target):
            inputs = keras.tree.flatten(args[0] if args else kwargs["inputs"])
            return _unpack(self.run(graph, inputs))
        if any(id(t) in self.dependent for t in flat):
            args, kwargs = keras.tree.map_structure(self._tile_cut, (args, kwargs))
            outputs = op(*args, **kwargs)
            self._mark(outputs)
            return outputs
        return op(*args, **kwargs)

    def _tile_cut(self, t):
        if not isinstance(t, keras.KerasTensor) or id(t) in self.dependent:
            return t
        if id(t) not in self.cut_ids:
            self.cut_ids.add(id(t))
            self.cuts.append(t)
        tiled = _Tile()(t, self.reference)
        self.dependent.add(id(tiled))
        return tiled

    def _mark(self, outputs):
        for t in keras.tree.flatten(outputs):
            self.dependent.add(id(t))


def _trace(model, layer, replace):
    graph = _graph_of(model)
    if graph is None:
        raise ValueError(
            "Invalid value for argument `model`. Expected a Functional or "
            "Sequential model built on a `keras.Input` (subclassed models "
            f"cannot be split at a layer). Received: model={model.name!r} "
            f"(a {type(model).__name__})"
        )
    tracer = _Tracer(layer, replace)
    inputs = graph._inputs_struct
    outputs = keras.tree.flatten(tracer.run(graph, keras.tree.flatten(inputs)))
    if tracer.result is None:
        raise ValueError(
            f"Invalid value for argument `layer`. Layer {layer.name!r} could "
            "not be reached through the Functional graph of model "
            f"{model.name!r} (is it inside a subclassed layer?). Received: "
            f"layer={layer.name!r}"
        )
    if len(outputs) != 1:
        raise ValueError(
            "Invalid value for argument `model`. Expected a classifier with "
            f"one output. Received: model with {len(outputs)} outputs"
        )
    if id(outputs[0]) not in tracer.dependent:
        raise ValueError(
            f"Invalid value for argument `layer`. The output of model "
            f"{model.name!r} does not depend on layer {layer.name!r}. "
            f"Received: layer={layer.name!r}"
        )
    return inputs, outputs[0], tracer


class DeletionSplit:
    """Sub-models for deletion: features -> (scores, keep, norms), head."""

    def __init__(self, model, layer, replace_keep):
        self.layer = layer
        holder = {}

        def replace(op, args, kwargs):
            features = args[0] if args else kwargs["inputs"]
            gh_gw = layer._grid(*layer._spatial(features.shape)[:2])
            keep_in = keras.Input(shape=tuple(gh_gw), dtype="float32")
            masked = _MaskedFeatures(layer, replace_keep)(features, keep_in)
            holder.update(features=features, keep=keep_in, masked=masked)
            return True, masked, masked

        inputs, output, tracer = _trace(model, layer, replace)
        features = holder["features"]
        cuts = [t for t in tracer.cuts if t is not features]
        terms = _TokenTerms(layer)(features)
        self.first = keras.Model(inputs, [features, *terms, *cuts])
        self.second = keras.Model([features, holder["keep"], *cuts], output)
        self.head = keras.Model([holder["masked"], *tracer.cuts], output)
        # Where each input of `head` after the first comes from in the
        # outputs of `first` (the features themselves may be a cut).
        self.head_cut_index = [
            0 if t is features else 4 + cuts.index(t) for t in tracer.cuts
        ]
        self.num_cuts = len(cuts)


class OutputSplit:
    """Sub-models around a layer's output: inputs -> output -> model output."""

    def __init__(self, model, layer):
        def replace(op, args, kwargs):
            outputs = op(*args, **kwargs)
            if not isinstance(outputs, keras.KerasTensor) or len(outputs.shape) != 4:
                raise invalid(
                    "layer", "a layer with one 4-D output", getattr(op, "name", op)
                )
            return outputs, outputs, outputs

        inputs, output, tracer = _trace(model, layer, replace)
        features = tracer.result
        cuts = [t for t in tracer.cuts if t is not features]
        self.first = keras.Model(inputs, [features, *cuts])
        self.head = keras.Model([features, *cuts], output)
        self.num_cuts = len(cuts)


def cached_split(kind, model, layer, *args):
    """Builds (once per model, layer and settings) a split of `model`."""
    per_model = _CACHE.setdefault(model, {})
    key = (kind, id(layer), *args)
    if key not in per_model:
        cls = DeletionSplit if kind == "deletion" else OutputSplit
        per_model[key] = cls(model, layer, *args)
    return per_model[key]
