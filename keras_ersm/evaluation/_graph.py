"""Splitting a Functional or Sequential model at one layer (internal).

The evaluation functions run the part of a model before a layer once and the
part after it many times. A split re-traces the model with
`keras_ersm.models.graph.trace` (public Keras API: `clone_model` with a
`call_function`), descending into nested Functional and Sequential models
that contain the layer (a backbone used as a layer of a classifier), and
builds flat Functional models that share the original layers and weights:

- `first`: model inputs -> a dict of named outputs (`"features"`, ...,
  `"cut_0"`, `"cut_1"`, ...);
- `second` / `head`: `[features, ..., *cuts] -> output`.

Deletion cuts at an `EnergyMask` or at any layer with a 4-D output (`Cut`:
there, an all-ones keep map and no scores).

`cuts` are the tensors computed before the layer that the part after it
still needs (skip connections around the layer). The splits are cached per
(model, layer, mode), so callbacks do not re-trace every epoch. See the
data-flow table of [Architecture](../../docs/architecture.md).
"""

import keras
from keras import ops

from keras_ersm import ops as ersm_ops
from keras_ersm._validation import invalid, invalid_type  # noqa: F401
from keras_ersm.layers.energy_mask import EnergyMask
from keras_ersm.models import graph, inspection
from keras_ersm.models.utils import energy_mask_layers

find_layer = graph.find_layer


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


def resolve_cut_layer(model, layer=None):
    """The layer deletion cuts at: the named layer (an `EnergyMask` or any
    layer, whose 4-D output the split checks), or the last `EnergyMask`."""
    if layer is None:
        if isinstance(model, keras.Model) and not energy_mask_layers(model):
            raise ValueError(
                f"Invalid value for argument `layer`. Model {model.name!r} has "
                "no EnergyMask layer to default to: pass the name of a layer "
                "with a 4-D output to cut at (e.g. the last convolution), or "
                "add a mask with `keras_ersm.models.insert_energy_masks(model, "
                "at=...)`. Received: layer=None"
            )
        return resolve_mask_layer(model)
    if not isinstance(model, keras.Model):
        raise invalid_type("model", "a Keras model", model)
    return find_layer(model, layer)


class _Tile(keras.layers.Layer):
    """Repeats `x` along the batch axis to the batch size of `reference`."""

    def call(self, x, reference):
        reps = ops.shape(reference)[0] // ops.shape(x)[0]
        return ops.tile(x, [reps] + [1] * (len(x.shape) - 1))

    def compute_output_shape(self, x_shape, reference_shape):
        return (None,) + tuple(x_shape[1:])


def layer_data_format(layer):
    """A layer's `data_format`, or the Keras default for a layer without one."""
    return getattr(layer, "data_format", None) or keras.config.image_data_format()


class Cut:
    """Where deletion cuts a model: an `EnergyMask` or a layer with a 4-D output.

    At an `EnergyMask` the tokens, keep map and `apply_keep` are the mask's.
    At any other layer a token is one spatial position of the layer's output
    (`patch_size=1`), the keep map is all ones and there are no scores (no
    energy order): the layer behaves as an identity `EnergyMask` with
    `rescale=True` would, so deleting tokens zeroes them and, unless the
    binary mask replaces the keep (`replace_keep=True`), multiplies the
    remaining features by `1 / (kept fraction)`.
    """

    def __init__(self, layer):
        self.layer = layer
        self.name = layer.name
        self.is_mask = isinstance(layer, EnergyMask)
        if self.is_mask:
            self.patch_size = layer.patch_size
            self.data_format = layer.data_format
            self.rescale = layer.rescale
        else:
            self.patch_size = 1
            self.data_format = layer_data_format(layer)
            self.rescale = True

    def terms(self, features):
        """Symbolic dict of `(B, gh, gw)` tensors: `"keep"`, `"norms"` and,
        at an `EnergyMask`, `"scores"`."""
        if self.is_mask:
            return inspection.MaskTerms(self.layer, norms=True)(features)
        return _PlainTerms(self.data_format)(features)

    def apply_keep(self, features, keep):
        """`EnergyMask.apply_keep`, or its identity-mask equivalent."""
        if self.is_mask:
            return self.layer.apply_keep(features, keep)
        features = ops.convert_to_tensor(features)
        if "float" not in keras.backend.standardize_dtype(features.dtype):
            features = ops.cast(features, "float32")
        keep = ops.cast(keep, "float32")
        if self.rescale:
            mean_keep = ops.mean(keep, axis=(1, 2), keepdims=True)
            keep = keep / (mean_keep + ersm_ops.EPSILON)
        axis = 1 if self.data_format == "channels_first" else -1
        return features * ops.expand_dims(ops.cast(keep, features.dtype), axis)


class _PlainTerms(keras.layers.Layer):
    """The deletion terms at a layer that is not a mask: an all-ones keep
    and the norms of its one-position tokens (float32, `(B, h, w)`)."""

    def __init__(self, data_format, **kwargs):
        super().__init__(**kwargs)
        self._data_format = data_format

    def call(self, features):
        x = ersm_ops.to_channels_last(ops.cast(features, "float32"), self._data_format)
        norms = ops.cast(ersm_ops.token_norms(ersm_ops.tokenize(x, 1)), "float32")
        return {"keep": ops.ones_like(norms), "norms": norms}


class _MaskedFeatures(keras.layers.Layer):
    """`Cut.apply_keep` with the features tiled to the keep's batch.

    Rows of `keep` are ordered step-major: row `s * B + b` is image `b`.
    With `replace=True` the keep map is applied without rescaling (the
    reference deletion protocol).
    """

    def __init__(self, cut, replace, **kwargs):
        super().__init__(**kwargs)
        # Bound methods and plain values are not tracked as sublayers.
        self._apply_keep = cut.apply_keep
        self._patch_size = cut.patch_size
        self._data_format = cut.data_format
        self._rescale = cut.rescale
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


class _Tracer:
    """The `call` of `graph.trace` that replaces the call of one layer.

    `replace(op, args, kwargs)` returns `(result, outputs, reference)`:
    what the split keeps, the tensors the rest of the model consumes, and
    the tensor whose batch size the tensors computed before the layer are
    tiled to (the `cuts`).
    """

    def __init__(self, target, replace):
        self.target = target
        self.replace = replace
        self.dependent = set()
        self.cuts = []
        self.cut_ids = set()
        self.reference = None
        self.result = None

    def descend(self, layer):
        return layer is not self.target and graph.contains(layer, self.target)

    def call(self, op, *args, **kwargs):
        if op is self.target:
            if self.result is not None:
                raise ValueError(
                    f"Layer {op.name!r} is called more than once in the model; "
                    "the evaluation needs a layer that is called once."
                )
            self.result, outputs, self.reference = self.replace(op, args, kwargs)
            self._mark(outputs)
            return outputs
        flat = keras.tree.flatten((args, kwargs))
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
    tracer = _Tracer(layer, replace)
    inputs, outputs = graph.trace(model, tracer.call, tracer.descend)
    outputs = keras.tree.flatten(outputs)
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


def _named(features, cuts, **tensors):
    """The named outputs of `first`: features, `tensors`, `cut_<i>`."""
    named = {"features": features, **tensors}
    named.update({f"cut_{i}": t for i, t in enumerate(cuts)})
    return named


class _Split:
    """Common part of the splits: `cuts(outs)` reads the cuts of `first`."""

    def cuts(self, outs):
        """The cut tensors, in order, from the dict `first` returns."""
        return [outs[f"cut_{i}"] for i in range(self.num_cuts)]


def _check_4d(op, outputs):
    """Raises a clear error when a cut layer's output is not one 4-D tensor."""
    if not isinstance(outputs, keras.KerasTensor) or len(outputs.shape) != 4:
        raise invalid("layer", "a layer with one 4-D output", getattr(op, "name", op))


class DeletionSplit(_Split):
    """Sub-models for deletion: `first` gives features, keep, norms (and, at
    an `EnergyMask`, scores); `second` runs the rest for rows of keep maps;
    `head` runs the rest from the masked features.

    At an `EnergyMask` the features are the mask's input; at any other layer
    (see `Cut`) they are the layer's output.
    """

    def __init__(self, model, layer, replace_keep):
        self.layer = layer
        self.cut = cut = Cut(layer)
        holder = {}

        def replace(op, args, kwargs):
            if cut.is_mask:
                features = args[0] if args else kwargs["inputs"]
            else:
                features = op(*args, **kwargs)
                _check_4d(op, features)
            terms = cut.terms(features)
            # The keep input of `second` is computed from the features, so
            # the traced graph stays connected (`clone_model` builds it).
            masked = _MaskedFeatures(cut, replace_keep)(features, terms["keep"])
            holder.update(features=features, terms=terms, masked=masked)
            return True, masked, masked

        inputs, output, tracer = _trace(model, layer, replace)
        features, terms = holder["features"], holder["terms"]
        cuts = [t for t in tracer.cuts if t is not features]
        named = {k: terms[k] for k in ("scores", "keep", "norms") if k in terms}
        self.first = keras.Model(inputs, _named(features, cuts, **named))
        self.second = keras.Model([features, terms["keep"], *cuts], output)
        self.head = keras.Model([holder["masked"], *tracer.cuts], output)
        # The names, in `first`'s outputs, of the inputs of `head` after the
        # first (the features themselves may be a cut).
        self.head_cut_names = [
            "features" if t is features else f"cut_{cuts.index(t)}" for t in tracer.cuts
        ]
        self.num_cuts = len(cuts)

    def head_cuts(self, outs):
        """The inputs of `head` after the masked features, from `outs`."""
        return [outs[name] for name in self.head_cut_names]


class OutputSplit(_Split):
    """Sub-models around a layer's output: inputs -> output -> model output."""

    def __init__(self, model, layer):
        def replace(op, args, kwargs):
            outputs = op(*args, **kwargs)
            _check_4d(op, outputs)
            return outputs, outputs, outputs

        inputs, output, tracer = _trace(model, layer, replace)
        features = tracer.result
        cuts = [t for t in tracer.cuts if t is not features]
        self.first = keras.Model(inputs, _named(features, cuts))
        self.head = keras.Model([features, *cuts], output)
        self.num_cuts = len(cuts)


def cached_split(kind, model, layer, *args):
    """Builds (once per model, layer and settings) a split of `model`."""
    cls = DeletionSplit if kind == "deletion" else OutputSplit
    return graph.cached(
        model, (kind, id(layer), *args), lambda: cls(model, layer, *args)
    )
