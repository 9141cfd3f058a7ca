"""The layer graph of Functional and Sequential models (internal).

Every module that reads or rebuilds a model's graph goes through here: the
keep-map reader (`models.inspection`), the inserter (`models.insertion`) and
the evaluation splits (`evaluation._graph`). See the module table in
[Architecture](../../docs/architecture.md).

Everything is built on public Keras API: `model.inputs`, `model.outputs`,
`keras.Model(inputs, outputs)` and `keras.models.clone_model(...,
call_function=...)`. The one thing Keras has no public API for, the list of
a layer's calls inside one model's graph, is read by `layer_calls`, the only
function of the package that touches private Keras attributes
(`pyproject.toml` bounds Keras to the versions it is tested with).
"""

import collections
import weakref

import keras

from keras_ersm import _validation

# One call of a layer in a model's graph: the layer, its positional and
# keyword arguments, its flat input tensors and its flat output tensors.
Call = collections.namedtuple("Call", ["layer", "args", "kwargs", "inputs", "outputs"])

_CACHE = weakref.WeakKeyDictionary()


def layer_calls(model):
    """Compatibility function: the layer calls of a Functional model's graph.

    Keras has no public API that lists where a layer is called in one
    model's graph (`layer.output` fails for a layer called twice, and
    `layer._inbound_nodes` mixes the calls of every model that uses the
    layer). This reads the private `Functional._nodes_by_depth` and the
    private `Node` attributes `operation`, `arguments.args`,
    `arguments.kwargs`, `input_tensors` and `outputs` (Keras 3.15, see
    `pyproject.toml`).

    Args:
        model: any object.

    Returns:
        A list of `Call`s, deepest first (an order in which they can be
        run), or `None` when `model` has no layer graph (a Sequential
        model, a subclassed model, a layer).
    """
    if isinstance(model, keras.Sequential) or not isinstance(model, keras.Model):
        return None
    nodes_by_depth = getattr(model, "_nodes_by_depth", None)
    if nodes_by_depth is None:
        return None
    return [
        Call(
            node.operation,
            tuple(node.arguments.args),
            dict(node.arguments.kwargs),
            list(node.input_tensors),
            list(node.outputs),
        )
        for depth in sorted(nodes_by_depth, reverse=True)
        for node in nodes_by_depth[depth]
    ]


def is_functional(model):
    """Whether `model` is a Functional model (a graph of layer calls)."""
    return layer_calls(model) is not None


def calls_of(model, layer):
    """The calls of `layer` in the graph of the Functional `model`."""
    return [call for call in layer_calls(model) or () if call.layer is layer]


def producer(model, tensor):
    """`(call, index)`: the call of `model`'s graph that outputs `tensor`."""
    for call in layer_calls(model) or ():
        for index, output in enumerate(call.outputs):
            if output is tensor:
                return call, index
    return None, None


def functional(model, argument="model"):
    """A Functional model over the same layers as a Functional or Sequential.

    A Functional model is returned as is; a Sequential model built on a
    `keras.Input` gives `keras.Model(model.inputs, model.outputs)`.

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: a subclassed model, or a Sequential model not built on
            a `keras.Input`.
    """
    if not isinstance(model, keras.Model):
        raise _validation.invalid_type(argument, "a Keras model", model)
    if is_functional(model):
        return model
    if isinstance(model, keras.Sequential):
        try:
            inputs, outputs = model.inputs, model.outputs
        except (AttributeError, ValueError):
            inputs = outputs = None
        if inputs and outputs:
            return keras.Model(
                inputs[0] if len(inputs) == 1 else inputs,
                outputs[0] if len(outputs) == 1 else outputs,
                name=model.name,
            )
    raise _validation.invalid(
        argument,
        "a Functional model or a Sequential model built on a `keras.Input` "
        "(subclassed models have no layer graph)",
        f"{model.name!r} (a {type(model).__name__})",
    )


def walk(layer, seen=None):
    """Yields `layer` and, depth first, every layer nested in it, once."""
    seen = set() if seen is None else seen
    if id(layer) in seen:
        return
    seen.add(id(layer))
    yield layer
    for child in getattr(layer, "layers", None) or []:
        yield from walk(child, seen)


def contains(model, target):
    """Whether `target` is `model` or a layer nested in it."""
    return any(layer is target for layer in walk(model))


def find_layer(model, layer, argument="layer"):
    """Resolves a layer name or instance inside `model` (nested included)."""
    if isinstance(layer, keras.layers.Layer):
        if not contains(model, layer):
            raise _validation.invalid(
                argument, f"a layer of model {model.name!r}", layer.name
            )
        return layer
    if not isinstance(layer, str):
        raise _validation.invalid(argument, "a layer name or a Keras layer", layer)
    for candidate in walk(model):
        if candidate is not model and candidate.name == layer:
            return candidate
    raise _validation.invalid(
        argument, f"the name of a layer of model {model.name!r}", layer
    )


def _same(layer):
    return layer


def _replay(model, inputs, call):
    """Runs the calls of `model`'s graph on `inputs` through `call`."""
    model = functional(model)
    new = dict(
        zip(
            map(id, keras.tree.flatten(model.input)),
            keras.tree.flatten(inputs),
            strict=True,
        )
    )

    def swap(value):
        if isinstance(value, keras.KerasTensor):
            return new[id(value)]
        return value

    for each in layer_calls(model):
        if isinstance(each.layer, keras.layers.InputLayer):
            continue
        args, kwargs = keras.tree.map_structure(swap, (each.args, each.kwargs))
        outputs = keras.tree.flatten(call(each.layer, *args, **kwargs))
        new.update(zip(map(id, each.outputs), outputs, strict=True))
    return keras.tree.map_structure(swap, model.output)


def trace(model, call, descend=lambda layer: False):
    """Re-applies the layers of `model` to new symbolic inputs.

    `keras.models.clone_model(..., clone_function=<identity>,
    call_function=...)` on `functional(model)`: the layers (and weights) are
    the original ones, each call goes through `call(layer, *args,
    **kwargs)`, which returns the call's outputs. Nested Functional and
    Sequential models for which `descend(layer)` is true are run call by
    call in the same graph instead of being called as one layer, so the
    returned tensors reach inside them (`clone_model` would re-root a
    nested clone at new inputs; the calls come from `layer_calls`).

    Returns:
        `(inputs, outputs)`: the new input and output structures; the
        tensors built in `call` belong to the same graph.
    """

    def call_function(layer, *args, **kwargs):
        if isinstance(layer, keras.Model) and descend(layer):
            x = args[0] if args else kwargs["inputs"]
            inner = functional(layer)
            x = keras.tree.pack_sequence_as(inner.input, keras.tree.flatten(x))
            return _replay(inner, x, call_function)
        return call(layer, *args, **kwargs)

    view = functional(model)
    # A plain, uncompiled Functional over the same layers: `clone_model`
    # would otherwise re-compile its copy of a compiled model.
    view = keras.Model(view.input, view.output, name=view.name)
    clone = keras.models.clone_model(
        view, clone_function=_same, call_function=call_function
    )
    return clone.input, clone.output


def cached(model, key, build):
    """`build()`, computed once per `model` and `key` (weakly held)."""
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = build()
    return per_model[key]
