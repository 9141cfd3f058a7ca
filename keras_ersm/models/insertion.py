"""Inserting `EnergyMask` layers into existing Functional models.

A point of insertion is named by the user as a layer name, a pyramid level
("P2".."P5", read from KerasCV's `pyramid_level_inputs` or KerasHub's
`pyramid_outputs`) or `"output"`. It is resolved here to a *site*: the graph
(model) it lives in, the layer that produces it and the index of the tensor
among that layer's outputs. The model is then cloned with
`keras.models.clone_model(call_function=...)`, every layer re-created from its
config and given a copy of the original weights, and an `EnergyMask` is
applied to the tensor of every site.

KerasCV and KerasHub are never imported: their pyramid attributes are read
by duck typing.
"""

import collections

import keras

from keras_ersm import _validation
from keras_ersm.layers.energy_mask import EnergyMask
from keras_ersm.models import graph as _graph

OUTPUT = "output"
_SUFFIX = "_energy_mask"
_MAX_LISTED = 20

# A resolved point: the Functional graph it lives in, the path of nested
# model names from the top model to that graph, the producing layer, the
# index of the tensor in that layer's flat outputs, and the tensor itself.
_Site = collections.namedtuple(
    "_Site", ["graph", "path", "layer", "tensor_index", "tensor"]
)


_invalid = _validation.invalid


_is_functional = _graph.is_functional


def check_functional(model, argument="model"):
    """Raises a clear error unless `model` is a Functional Keras model."""
    if isinstance(model, keras.Sequential):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a Functional "
            f"model. Received: {argument}={model.name!r} (a Sequential "
            "model). Rebuild it as a Functional model, e.g. "
            "`keras.Model(model.inputs, model.outputs)` once it is built "
            "with an `Input`, or add `keras_ersm.EnergyMask()` to its list "
            "of layers directly."
        )
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"Invalid value for argument `{argument}`. Expected a Functional "
            f"Keras model. Received: {argument}={model!r}"
        )
    if not _is_functional(model):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a Functional "
            f"model. Received: {argument}={model.name!r} of class "
            f"{type(model).__name__}, a subclassed model or layer, which has "
            "no layer graph to patch. Call `keras_ersm.EnergyMask()` inside "
            "its `call` instead, or rebuild it as a Functional model "
            "(`keras.Model(inputs, outputs)`)."
        )


_layer_nodes = _graph.calls_of


def pyramid_tensors(model):
    """Returns the feature-pyramid tensors of a backbone, level -> tensor.

    Reads KerasHub's `pyramid_outputs` (level -> tensor) or KerasCV's
    `pyramid_level_inputs` (level -> layer name), also on models returned by
    `insert_energy_masks`. Models without a pyramid give `{}`.
    """
    levels = {}
    try:
        outputs = getattr(model, "pyramid_outputs", None)
    except Exception:  # Some backbones raise NotImplementedError.
        outputs = None
    if isinstance(outputs, dict):
        for level, tensor in outputs.items():
            if isinstance(tensor, keras.KerasTensor):
                levels[str(level)] = tensor
    try:
        inputs = getattr(model, "pyramid_level_inputs", None)
    except Exception:
        inputs = None
    if isinstance(inputs, dict):
        for level, name in inputs.items():
            if str(level) in levels or not isinstance(name, str):
                continue
            try:
                layer = model.get_layer(name)
            except ValueError:
                continue
            nodes = _layer_nodes(model, layer)
            if len(nodes) == 1 and len(nodes[0].outputs) == 1:
                levels[str(level)] = nodes[0].outputs[0]
    return dict(sorted(levels.items()))


def _nested_graphs(model, path=()):
    """Yields (path, graph) for the model and its nested Functional models."""
    yield path, model
    for layer in model.layers:
        if _is_functional(layer):
            yield from _nested_graphs(layer, path + (layer.name,))


def _site_of_tensor(graph, path, tensor):
    call, tensor_index = _graph.producer(graph, tensor)
    if call is None or len(_layer_nodes(graph, call.layer)) != 1:
        return None
    return _Site(graph, path, call.layer, tensor_index, tensor)


def _candidate_layers(model, recursive):
    """Yields (point name, path, graph, layer) for every non-input layer."""
    for path, graph in _nested_graphs(model) if recursive else [((), model)]:
        for layer in graph.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            yield "/".join(path + (layer.name,)), path, graph, layer


def _is_feature_map(site):
    return site is not None and len(site.tensor.shape) == 4


def _single_site(graph, path, layer):
    nodes = _layer_nodes(graph, layer)
    if len(nodes) != 1 or len(nodes[0].outputs) != 1:
        return None
    return _Site(graph, path, layer, 0, nodes[0].outputs[0])


def _pyramid_sites(model, recursive):
    sites = {}
    for path, graph in _nested_graphs(model) if recursive else [((), model)]:
        for level, tensor in pyramid_tensors(graph).items():
            site = _site_of_tensor(graph, path, tensor)
            if site is not None:
                sites.setdefault(level, []).append(site)
    return sites


def insertion_points(model, recursive=False):
    """Lists the points where `insert_energy_masks` can put an `EnergyMask`.

    A valid point produces a single 4-D feature map: `"output"` when the
    model has one 4-D output, the pyramid levels of a KerasCV or KerasHub
    backbone (`"P2"`, `"P3"`, ...), and the names of layers with a 4-D
    output that are called once in the graph. With `recursive=True`, layers
    of nested Functional models are listed as `"outer/inner"`.

    Args:
        model: a Functional Keras model.
        recursive: bool, whether to list points inside nested Functional
            models. Defaults to `False`.

    Returns:
        List of point names: `"output"` first, then pyramid levels, then
        layer names in graph order.

    Examples:

    ```python
    import keras
    import keras_ersm

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Flatten(name="flat")(x))
    assert keras_ersm.models.insertion_points(model) == ["conv"]
    ```
    """
    check_functional(model)
    if not isinstance(recursive, bool):
        raise _validation.invalid_type("recursive", "a bool", recursive)
    points = []
    outputs = model.outputs
    if len(outputs) == 1 and _is_feature_map(_site_of_tensor(model, (), outputs[0])):
        points.append(OUTPUT)
    for level, sites in _pyramid_sites(model, recursive).items():
        if len(sites) == 1 and _is_feature_map(sites[0]):
            points.append(level)
    for name, path, graph, layer in _candidate_layers(model, recursive):
        if _is_feature_map(_single_site(graph, path, layer)):
            points.append(name)
    return points


def _describe_points(model, recursive):
    points = insertion_points(model, recursive)
    shown = ", ".join(repr(p) for p in points[:_MAX_LISTED])
    if len(points) > _MAX_LISTED:
        shown += (
            f", ... ({len(points) - _MAX_LISTED} more; see "
            "`keras_ersm.models.insertion_points(model)`)"
        )
    return f"Valid points of model {model.name!r}: [{shown}]"


def _find_layers(model, name, recursive):
    """Returns [(path, graph, layer)] for a layer name or "outer/inner" path."""
    if "/" in name:
        *outer, inner = name.split("/")
        graph, path = model, ()
        for part in outer:
            try:
                graph = graph.get_layer(part)
            except ValueError:
                return []
            if not _is_functional(graph):
                return []
            path += (part,)
        if path and not recursive:
            return []
        return [(path, graph, layer) for layer in graph.layers if layer.name == inner]
    return [
        (path, graph, layer)
        for point, path, graph, layer in _candidate_layers(model, recursive)
        if layer.name == name
    ]


def resolve_point(model, point, recursive=False):
    """Resolves one point name to its site (graph, layer, tensor index)."""
    if not isinstance(point, str):
        raise TypeError(
            "Invalid value for argument `at`. Expected point names (str): "
            "layer names, pyramid levels such as 'P3', or 'output'. "
            f"Received: at={point!r}"
        )
    if point == OUTPUT:
        if len(model.outputs) != 1:
            raise _invalid(
                "at",
                "'output' on a model with a single output",
                point,
                f"Model {model.name!r} has {len(model.outputs)} outputs; name "
                "the layers that produce them instead",
            )
        site = _site_of_tensor(model, (), model.outputs[0])
        if site is None:
            raise _invalid("at", "a point produced by a layer", point)
    else:
        layers = _find_layers(model, point, recursive)
        if not layers:
            levels = _pyramid_sites(model, recursive)
            if point in levels:
                sites = levels[point]
                if len(sites) > 1:
                    owners = ["/".join(s.path) or model.name for s in sites]
                    raise _invalid(
                        "at",
                        "a pyramid level found in one backbone",
                        point,
                        f"Level {point!r} is defined by several nested "
                        f"models {owners}; name a layer instead",
                    )
                site = sites[0]
            elif _is_input_name(model, point, recursive):
                raise _input_point(point)
            else:
                kind = "pyramid level" if _looks_like_level(point) else "layer"
                hint = _describe_points(model, recursive)
                if kind == "pyramid level" and not levels:
                    hint = (
                        f"Model {model.name!r} has no feature pyramid (no "
                        "KerasCV `pyramid_level_inputs` or KerasHub "
                        "`pyramid_outputs`). " + hint
                    )
                if not recursive and _find_layers(model, point, True):
                    hint = (
                        f"{point!r} is inside a nested model; pass "
                        "recursive=True to reach it. " + hint
                    )
                raise ValueError(
                    f"Invalid value for argument `at`: unknown {kind} "
                    f"{point!r}. Received: at={point!r}. {hint}"
                )
        elif len(layers) > 1:
            paths = ["/".join(p + (layer.name,)) for p, _, layer in layers]
            raise _invalid(
                "at",
                "a layer name found once",
                point,
                f"Several nested layers have this name; use one of {paths}",
            )
        else:
            path, graph, layer = layers[0]
            if isinstance(layer, keras.layers.InputLayer):
                raise _input_point(point)
            nodes = _layer_nodes(graph, layer)
            if len(nodes) != 1:
                raise _invalid(
                    "at",
                    "a layer called once in the model",
                    point,
                    f"Layer {layer.name!r} is shared: it is called {len(nodes)} times",
                )
            if len(nodes[0].outputs) != 1:
                raise _invalid(
                    "at",
                    "a layer with a single output",
                    point,
                    f"Layer {layer.name!r} has {len(nodes[0].outputs)} outputs",
                )
            site = _Site(graph, path, layer, 0, nodes[0].outputs[0])
    if not _is_feature_map(site):
        raise _invalid(
            "at",
            "a point whose output is a 4-D feature map (batch, height, "
            "width, channels)",
            point,
            f"Its output has shape {tuple(site.tensor.shape)}",
        )
    return site


def _input_point(point):
    return _invalid(
        "at",
        "a layer after the inputs",
        point,
        "An EnergyMask cannot be inserted at an input; insert it "
        "after the first layer that follows",
    )


def _is_input_name(model, point, recursive):
    graphs = _nested_graphs(model) if recursive else [((), model)]
    for path, graph in graphs:
        for layer in graph.layers:
            name = "/".join(path + (layer.name,))
            if isinstance(layer, keras.layers.InputLayer) and point in (
                name,
                layer.name,
            ):
                return True
    return False


def _looks_like_level(point):
    return len(point) >= 2 and point[0] == "P" and point[1:].isdigit()


def _normalize_at(at):
    """Returns an ordered dict point -> per-point kwargs."""
    if isinstance(at, str):
        return {at: {}}
    if isinstance(at, dict):
        points = {}
        for point, kwargs in at.items():
            if kwargs is None:
                kwargs = {}
            if not isinstance(kwargs, dict):
                raise TypeError(
                    "Invalid value for argument `at`. Expected a dict of "
                    "point -> dict of EnergyMask arguments (or None). "
                    f"Received: at[{point!r}]={kwargs!r}"
                )
            points[point] = dict(kwargs)
        return points
    if isinstance(at, (list, tuple)):
        points = {}
        for point in at:
            if isinstance(point, str) and point in points:
                raise _invalid(
                    "at", "each point named once", at, f"{point!r} is repeated"
                )
            points[point] = {}
        return points
    raise TypeError(
        "Invalid value for argument `at`. Expected a point name, a list of "
        "point names or a dict of point -> EnergyMask arguments. "
        f"Received: at={at!r}"
    )


def all_names(model):
    names = set()
    for _, graph in _nested_graphs(model):
        names.add(graph.name)
        names.update(layer.name for layer in graph.layers)
    return names


def unique_name(base, taken):
    name, index = base, 1
    while name in taken:
        name = f"{base}_{index}"
        index += 1
    taken.add(name)
    return name


def plan_masks(model, at, recursive, mask_kwargs):
    """Resolves `at` into {id(layer): [(tensor_index, EnergyMask)]}."""
    points = _normalize_at(at)
    taken = all_names(model)
    plans, seen = {}, {}
    for point, point_kwargs in points.items():
        site = resolve_point(model, point, recursive)
        key = (id(site.layer), site.tensor_index)
        if key in seen:
            raise _invalid(
                "at",
                "distinct points",
                at,
                f"{seen[key]!r} and {point!r} are the same point (output of "
                f"layer {site.layer.name!r})",
            )
        seen[key] = point
        kwargs = {**mask_kwargs, **point_kwargs}
        if "name" not in kwargs:
            base = site.layer.name
            if site.tensor_index:
                base += f"_{site.tensor_index}"
            kwargs["name"] = base + _SUFFIX
        kwargs["name"] = unique_name(kwargs["name"], taken)
        plans.setdefault(id(site.layer), []).append(
            (site.tensor_index, EnergyMask(**kwargs))
        )
    return plans


def _clone_layer(layer):
    try:
        new = layer.__class__.from_config(layer.get_config())
    except Exception as error:
        if not getattr(layer, "weights", None):
            # A weightless layer that cannot be re-created from its config
            # (e.g. a `Lambda` of a Python lambda under safe mode) is
            # stateless, so the clone can reuse it.
            return layer
        raise ValueError(
            f"Cannot copy layer {layer.name!r} ({type(layer).__name__}) of "
            "the model: re-creating it from its config failed with "
            f"{type(error).__name__}: {error}. Give the layer a `get_config` "
            "that returns every `__init__` argument."
        ) from error
    if isinstance(layer, keras.layers.Layer) and not layer.trainable:
        # `trainable=False` in a config does not reach the sublayers that a
        # composite layer creates in `__init__`; the setter does. On the
        # TensorFlow backend setting the value the layer already has is a
        # no-op, hence the toggle.
        new.trainable = True
        new.trainable = False
    return new


def clone_with_masks(model, plans):
    """Clones `model` (weights copied), applying the planned masks.

    Returns:
        `(clone, new_outputs)`: the new Functional model and a dict
        id(original layer) -> flat list of `(tensor, name)`: the new output
        tensors (masked where a mask was planned) and the names of the
        layers that produce them.
    """
    pairs, originals, new_outputs, memo = [], {}, {}, {}

    def clone_function(layer):
        # Recursion is done here rather than by `clone_model(recursive=True)`
        # so that nested models pass through `originals` too (a nested model
        # can itself be a point) and layers shared between nested models
        # stay shared.
        if id(layer) in memo:
            return memo[id(layer)]
        if _is_functional(layer):
            new = keras.models.clone_model(
                layer, clone_function=clone_function, call_function=call_function
            )
        elif isinstance(layer, keras.Sequential):
            new = keras.models.clone_model(layer, clone_function=clone_function)
        else:
            new = _clone_layer(layer)
            pairs.append((layer, new))
        memo[id(layer)] = new
        originals[id(new)] = layer
        return new

    def call_function(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        original = originals.get(id(layer))
        if original is None:
            return outputs
        flat = list(keras.tree.flatten(outputs))
        named = [(tensor, layer.name) for tensor in flat]
        for tensor_index, mask in plans.get(id(original), ()):
            flat[tensor_index] = mask(flat[tensor_index])
            named[tensor_index] = (flat[tensor_index], mask.name)
        new_outputs[id(original)] = named
        if id(original) in plans:
            outputs = keras.tree.pack_sequence_as(outputs, flat)
        return outputs

    clone = keras.models.clone_model(
        model, clone_function=clone_function, call_function=call_function
    )
    for original, new in pairs:
        if new is not original and getattr(original, "weights", None):
            new.set_weights(original.get_weights())
    return clone, new_outputs


def expose_pyramid(model, clone, new_outputs):
    """Sets `pyramid_outputs` / `pyramid_level_inputs` on the clone(s)."""
    clones = dict(_nested_graphs(clone))
    for path, graph in _nested_graphs(model):
        target = clones.get(path)
        levels = pyramid_tensors(graph)
        if target is None or not levels:
            continue
        outputs, names = {}, {}
        for level, tensor in levels.items():
            call, tensor_index = _graph.producer(graph, tensor)
            named = None if call is None else new_outputs.get(id(call.layer))
            if named is None:
                continue
            outputs[level], names[level] = named[tensor_index]
        try:
            target.pyramid_outputs = outputs
            target.pyramid_level_inputs = names
        except AttributeError:  # A model class with read-only properties.
            pass


def insert_energy_masks(model, at, recursive=False, **mask_kwargs):
    """Returns a copy of a Functional model with `EnergyMask` layers inserted.

    The model is cloned with `keras.models.clone_model(call_function=...)`:
    every layer is re-created from its config and receives a copy of the
    original weights (layers' `trainable` flags included), so the input
    model is left unchanged and training the copy does not move it. An
    `EnergyMask` is applied to the output of each requested point, so every
    layer that consumed that output now consumes the masked features.

    Points are:

    - a layer name (its single output must be a 4-D feature map);
    - a pyramid level such as `"P3"`, read from a KerasCV backbone's
      `pyramid_level_inputs` or a KerasHub backbone's `pyramid_outputs`;
    - `"output"`, the model's (single) output.

    Inserted layers are named `<layer>_energy_mask` (`_1`, `_2`, ... when
    taken). The returned model is a plain Functional model (the backbone
    class is not kept), so its feature pyramid is re-exposed in both
    conventions: `new_model.pyramid_outputs` (level -> tensor, KerasHub
    style) and `new_model.pyramid_level_inputs` (level -> layer name,
    KerasCV style). Where a mask was inserted at a level, both point to the
    masked features. These attributes live on the Python object: they are
    not restored by `keras.saving.load_model`.

    Args:
        model: a Functional Keras model, e.g. a `keras.applications` model,
            a KerasCV or a KerasHub backbone.
        at: a point name, a list of point names, or a dict of point name ->
            dict of `EnergyMask` arguments for that point (merged over
            `mask_kwargs`; `None` for none). A per-point `"name"` overrides
            the generated name.
        recursive: bool. If `True`, points may also be layers (by name, or
            as `"outer/inner"`) and pyramid levels of nested Functional
            models, which are patched in place of the nesting. Defaults to
            `False`.
        **mask_kwargs: arguments of every inserted `EnergyMask`, e.g.
            `patch_size=2`.

    Returns:
        A new Functional model with the same inputs and outputs structure.

    Raises:
        ValueError: for a Sequential or subclassed model, an unknown layer
            name or pyramid level (the message lists the valid points), a
            point whose output is not a 4-D feature map, or the same point
            given twice.

    Examples:

    ```python
    import numpy as np
    import keras
    import keras_ersm

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(x)
    model = keras.Model(inputs, x)

    patched = keras_ersm.models.insert_energy_masks(
        model, {"conv1": {"patch_size": 2}, "output": None}
    )
    names = [l.name for l in keras_ersm.models.energy_mask_layers(patched)]
    assert names == ["conv1_energy_mask", "conv2_energy_mask"]
    assert patched(np.zeros((1, 16, 16, 3))).shape == (1, 16, 16, 8)
    ```
    """
    check_functional(model)
    if not isinstance(recursive, bool):
        raise _validation.invalid_type("recursive", "a bool", recursive)
    plans = plan_masks(model, at, recursive, mask_kwargs)
    if not plans:
        raise _invalid("at", "at least one point", at)
    clone, new_outputs = clone_with_masks(model, plans)
    expose_pyramid(model, clone, new_outputs)
    return clone
