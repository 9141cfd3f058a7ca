"""Tests of keras_ersm.models.graph, the one graph module."""

import keras
import numpy as np
import pytest

import keras_ersm
from keras_ersm.models import graph
from keras_ersm.testing.test_case import images, small_model, to_numpy


def _shared_model():
    inputs = keras.Input((8, 8, 3), name="image")
    conv = keras.layers.Conv2D(3, 3, padding="same", name="shared")
    return keras.Model(inputs, conv(conv(inputs))), conv


def test_layer_calls_is_the_compatibility_function():
    # The one function that reads private Keras attributes: it must keep
    # working on the Keras versions `pyproject.toml` allows.
    model, conv = _shared_model()
    calls = graph.layer_calls(model)
    assert [c.layer.name for c in calls] == ["image", "shared", "shared"]
    first, second = graph.calls_of(model, conv)
    assert first.inputs == [model.input]
    assert first.args[0] is model.input
    assert second.inputs == first.outputs
    assert second.outputs == [model.output]
    assert graph.producer(model, model.output) == (second, 0)
    assert graph.producer(model, keras.Input((2,))) == (None, None)
    # Calls of the layer in another model's graph are not counted.
    keras.Model(model.input, conv(model.input))
    assert len(graph.calls_of(model, conv)) == 2


def test_layer_calls_of_models_without_a_graph():
    assert graph.layer_calls(keras.layers.Dense(2)) is None
    assert (
        graph.layer_calls(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]))
        is None
    )

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    assert graph.layer_calls(Subclassed()) is None
    assert not graph.is_functional(Subclassed())


def test_functional_view_of_a_sequential_model():
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="conv")]
    )
    view = graph.functional(model)
    assert graph.is_functional(view)
    assert view.layers[-1] is model.get_layer("conv")
    x = images(2, size=8)
    np.testing.assert_allclose(to_numpy(view(x)), to_numpy(model(x)), rtol=1e-6)
    with pytest.raises(TypeError, match="model="):
        graph.functional("not a model")
    with pytest.raises(ValueError, match="keras.Input"):
        graph.functional(keras.Sequential([keras.layers.Dense(2)]))


def test_trace_reuses_the_layers_and_descends_into_nested_models():
    backbone = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, padding="same", name="conv"),
            keras.layers.ReLU(name="relu"),
        ],
        name="backbone",
    )
    inputs = keras.Input((16, 16, 3))
    h = backbone(keras.layers.Rescaling(2.0, name="scale")(inputs))
    outer = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))
    seen = {}

    def call(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        seen[layer.name] = outputs
        return outputs

    new_inputs, outputs = graph.trace(
        outer, call, descend=lambda layer: layer is backbone
    )
    assert "conv" in seen and "backbone" not in seen
    probe = keras.Model(new_inputs, [seen["conv"], outputs])
    assert backbone.get_layer("conv") in probe.layers
    x = images(2)
    features, out = probe(x)
    expected = backbone.get_layer("conv")(x * 2.0)
    np.testing.assert_allclose(
        to_numpy(features), to_numpy(expected), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(to_numpy(out), to_numpy(outer(x)), rtol=1e-5, atol=1e-6)


def test_find_layer_and_cache():
    model = keras_ersm.models.build_classifier(small_model(), 3)
    mask = keras_ersm.models.energy_mask_layers(model)[0]
    assert graph.find_layer(model, mask.name) is mask
    with pytest.raises(ValueError, match="layer='nope'"):
        graph.find_layer(model, "nope")
    built = []
    first = graph.cached(model, "key", lambda: built.append(1) or len(built))
    assert graph.cached(model, "key", lambda: built.append(1) or len(built)) == first
    assert built == [1]
