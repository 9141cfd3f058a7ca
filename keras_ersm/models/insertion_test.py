"""Tests of insert_energy_masks and insertion_points on small plain models."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_ersm
from keras_ersm.models import (
    energy_mask_layers,
    insert_energy_masks,
    insertion_points,
)
from keras_ersm.testing.test_case import (
    PASS_THROUGH,
    check_save_and_load,
    images,
    pyramid_model,
    run_model_test,
    small_model,
)


def mask_names(model):
    return [layer.name for layer in energy_mask_layers(model)]


def consumers(model, layer_name):
    """Names of the layers fed by `layer_name` in the model's graph."""
    names = []
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                if tensor._keras_history.operation.name == layer_name:
                    names.append(layer.name)
    return names


def test_masks_at_layer_names_and_output():
    model = small_model()
    patched = insert_energy_masks(model, ["relu1", "output"])
    assert mask_names(patched) == ["relu1_energy_mask", "relu2_energy_mask"]
    assert consumers(patched, "relu1") == ["relu1_energy_mask"]
    assert consumers(patched, "relu1_energy_mask") == ["conv2"]
    assert patched.outputs[0]._keras_history.operation.name == ("relu2_energy_mask")
    assert patched.output.shape == model.output.shape


def test_input_model_unchanged_and_independent():
    model = small_model()
    layers_before = list(model.layers)
    output_before = model.outputs[0]
    weights_before = [w.copy() for w in model.get_weights()]
    patched = insert_energy_masks(model, "relu1")
    assert list(model.layers) == layers_before
    assert model.outputs[0] is output_before
    assert not energy_mask_layers(model)
    assert consumers(model, "relu1") == ["conv2"]
    # Copies of the weights: training the patched model leaves the input one.
    patched.compile("sgd", "mse")
    patched.fit(images(), np.ones((4, 8, 8, 6)), epochs=1, verbose=0)
    for before, after in zip(weights_before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(
            model.get_layer("conv1").get_weights(),
            patched.get_layer("conv1").get_weights(),
            strict=True,
        )
    ]
    assert any(changed)


@keras.saving.register_keras_serializable(package="keras_ersm_test")
class Block(keras.layers.Layer):
    """A composite layer: its sublayer is created in `__init__`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, padding="same")

    def call(self, x):
        return self.conv(x)


def test_frozen_composite_layers_stay_frozen():
    inputs = keras.Input((8, 8, 3))
    x = Block(name="block")(inputs)
    model = keras.Model(inputs, keras.layers.ReLU(name="relu")(x))
    model.trainable = False
    patched = insert_energy_masks(model, "relu")
    mask = energy_mask_layers(patched)[0]
    assert {id(w) for w in patched.trainable_weights} == {
        id(w) for w in mask.trainable_weights
    }


def test_pass_through_masks_reproduce_outputs():
    model = small_model()
    x = images()
    patched = insert_energy_masks(model, ["relu1", "conv2", "output"], **PASS_THROUGH)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(patched(x)),
        keras.ops.convert_to_numpy(model(x)),
        rtol=1e-6,
        atol=1e-6,
    )


def test_per_point_kwargs_and_names():
    model = small_model()
    patched = insert_energy_masks(
        model,
        {"relu1": {"patch_size": 2, "name": "early"}, "output": None},
        temperature=2.0,
    )
    early, late = energy_mask_layers(patched)
    assert (early.name, early.patch_size, early.temperature) == ("early", 2, 2.0)
    assert (late.name, late.patch_size, late.temperature) == (
        "relu2_energy_mask",
        1,
        2.0,
    )


def test_names_stay_unique_when_patched_twice():
    once = insert_energy_masks(small_model(), "relu1")
    twice = insert_energy_masks(once, ["relu1", "relu1_energy_mask"])
    names = [layer.name for layer in twice.layers]
    assert len(names) == len(set(names))
    assert mask_names(twice) == [
        "relu1_energy_mask_1",
        "relu1_energy_mask",
        "relu1_energy_mask_energy_mask",
    ]


def test_fit_step_trains_masks_with_jit():
    patched = insert_energy_masks(small_model(), ["relu1", "output"])
    patched.get_layer("conv1").trainable = False
    # Eager and symbolic call, .keras round trip (outputs, losses, trainable
    # flags), one jit fit step that trains every trainable weight (both
    # masks') and leaves the frozen conv1 alone.
    loaded = run_model_test(patched, images(), np.ones((4, 8, 8, 6), "float32"))
    assert mask_names(loaded) == mask_names(patched)
    assert not loaded.get_layer("conv1").trainable
    patched(images())
    assert len(patched.losses) == 2  # One energy loss per mask.


def test_save_and_load_round_trip():
    patched = insert_energy_masks(small_model(), ["relu1", "output"], patch_size=2)
    loaded = check_save_and_load(patched, images())
    assert mask_names(loaded) == mask_names(patched)


def test_pyramid_levels_resolved_and_reexposed():
    model = pyramid_model()
    assert insertion_points(model)[:3] == ["output", "P1", "P2"]
    patched = insert_energy_masks(model, "P1")
    assert mask_names(patched) == ["relu1_energy_mask"]
    assert patched.pyramid_level_inputs == {
        "P1": "relu1_energy_mask",
        "P2": "relu2",
    }
    p1 = patched.pyramid_outputs["P1"]
    assert p1._keras_history.operation.name == "relu1_energy_mask"
    # The re-exposed pyramid resolves again, so patched models can be patched.
    again = insert_energy_masks(patched, "P2")
    assert mask_names(again) == ["relu1_energy_mask", "relu2_energy_mask"]
    features = keras.Model(patched.inputs, list(patched.pyramid_outputs.values()))
    assert [tuple(t.shape) for t in features.outputs] == [
        (None, 16, 16, 4),
        (None, 8, 8, 6),
    ]


def test_patched_pyramid_model_saves():
    patched = insert_energy_masks(pyramid_model(), "P1")
    loaded = check_save_and_load(patched, images(2))
    assert mask_names(loaded) == ["relu1_energy_mask"]


def test_kerashub_style_pyramid_outputs():
    model = small_model("hub_like")
    model.pyramid_outputs = {"P2": model.get_layer("relu2").output}
    patched = insert_energy_masks(model, "P2")
    assert mask_names(patched) == ["relu2_energy_mask"]
    assert patched.pyramid_level_inputs == {"P2": "relu2_energy_mask"}


def test_nested_models_need_recursive():
    backbone = small_model("backbone")
    inputs = keras.Input((16, 16, 3))
    x = backbone(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outer = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    with pytest.raises(ValueError, match="recursive=True"):
        insert_energy_masks(outer, "relu1")
    patched = insert_energy_masks(outer, ["relu1", "backbone"], recursive=True)
    assert mask_names(patched) == ["relu1_energy_mask", "backbone_energy_mask"]
    nested = patched.get_layer("backbone")
    assert mask_names(nested) == ["relu1_energy_mask"]
    same = insert_energy_masks(outer, "backbone/relu1", recursive=True)
    assert mask_names(same) == ["relu1_energy_mask"]
    x = images()
    keep_one = insert_energy_masks(outer, "relu1", recursive=True, **PASS_THROUGH)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keep_one(x)),
        keras.ops.convert_to_numpy(outer(x)),
        rtol=1e-6,
        atol=1e-6,
    )
    assert "backbone/relu1" in insertion_points(outer, recursive=True)


@pytest.mark.parametrize("recursive", ["yes", 1, None])
def test_recursive_must_be_a_bool(recursive):
    model = small_model()
    for function in (
        insertion_points,
        lambda m, **kw: insert_energy_masks(m, "relu1", **kw),
    ):
        with pytest.raises(TypeError, match=f"Received: recursive={recursive!r}"):
            function(model, recursive=recursive)


def test_nested_pyramid_level_with_recursive():
    backbone = pyramid_model()
    inputs = keras.Input((16, 16, 3))
    outer = keras.Model(inputs, backbone(inputs))
    patched = insert_energy_masks(outer, "P1", recursive=True)
    nested = patched.get_layer("pyramid")
    assert mask_names(nested) == ["relu1_energy_mask"]
    assert nested.pyramid_level_inputs["P1"] == "relu1_energy_mask"


def test_error_unknown_layer_lists_valid_points():
    with pytest.raises(ValueError, match="unknown layer 'nope'") as info:
        insert_energy_masks(small_model(), "nope")
    assert "'relu1'" in str(info.value) and "'output'" in str(info.value)


def test_error_unknown_pyramid_level_lists_valid_points():
    with pytest.raises(ValueError, match="no feature pyramid") as info:
        insert_energy_masks(small_model(), "P3")
    assert "Valid points" in str(info.value)
    with pytest.raises(ValueError, match="unknown pyramid level 'P5'") as info:
        insert_energy_masks(pyramid_model(), "P5")
    assert "'P1', 'P2'" in str(info.value)


def test_error_sequential_model_says_what_to_do():
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match=r"Sequential.*keras.Model\(model.inputs"):
        insert_energy_masks(model, "output")
    functional = keras.Model(model.inputs, model.outputs)
    assert mask_names(insert_energy_masks(functional, "output"))


def test_error_subclassed_model_says_what_to_do():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    with pytest.raises(ValueError, match="subclassed.*inside its `call`"):
        insert_energy_masks(Net(), "output")
    with pytest.raises(TypeError, match="Received: model="):
        insert_energy_masks("resnet", "output")


def test_error_point_not_4d():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    x = keras.layers.Flatten(name="flat")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="dense")(x))
    for point in ("flat", "output"):
        with pytest.raises(ValueError, match=r"4-D feature map.*shape \(None"):
            insert_energy_masks(model, point)
    with pytest.raises(ValueError, match="input"):
        insert_energy_masks(model, model.layers[0].name)


def test_error_duplicate_points():
    model = pyramid_model()
    with pytest.raises(ValueError, match="'relu1' is repeated"):
        insert_energy_masks(model, ["relu1", "relu1"])
    with pytest.raises(ValueError, match="'relu2' and 'output' are the same"):
        insert_energy_masks(model, ["relu2", "output"])
    with pytest.raises(ValueError, match="'P1' and 'relu1' are the same"):
        insert_energy_masks(model, {"P1": None, "relu1": {}})


def test_error_bad_at_values():
    model = small_model()
    with pytest.raises(TypeError, match="Received: at=3"):
        insert_energy_masks(model, 3)
    with pytest.raises(TypeError, match="Received: at=3"):
        insert_energy_masks(model, [3])
    with pytest.raises(TypeError, match=r"at\['relu1'\]=2"):
        insert_energy_masks(model, {"relu1": 2})
    with pytest.raises(ValueError, match="at least one point"):
        insert_energy_masks(model, [])
    # A wrong type is a TypeError (keras_ersm._validation's rule).
    with pytest.raises(TypeError, match="Received: recursive=1"):
        insert_energy_masks(model, "relu1", recursive=1)
    with pytest.raises(TypeError, match="Received: recursive='yes'"):
        insert_energy_masks(model, "relu1", recursive="yes")
    with pytest.raises(ValueError, match="patch_size"):
        insert_energy_masks(model, "relu1", patch_size=0)


def test_error_layer_without_config():
    class NoConfig(keras.layers.Layer):
        def __init__(self, units):
            super().__init__()
            self.dense = keras.layers.Dense(units)

        def call(self, x):
            return self.dense(x)

    inputs = keras.Input((8, 8, 3))
    x = NoConfig(4)(inputs)
    model = keras.Model(inputs, keras.layers.ReLU(name="relu")(x))
    with pytest.raises(ValueError, match="get_config"):
        insert_energy_masks(model, "relu")


def test_error_shared_layer():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(3, 3, padding="same", name="shared")
    model = keras.Model(inputs, conv(conv(inputs)))
    with pytest.raises(ValueError, match="called 2 times"):
        insert_energy_masks(model, "shared")


def test_does_not_import_kerascv_or_kerashub():
    # TensorFlow, KerasCV and KerasHub made unimportable, as if not installed
    # (TensorFlow stays importable on the tensorflow backend).
    blocked = ["keras_cv", "keras_hub"]
    if keras.backend.backend() != "tensorflow":
        blocked.append("tensorflow")
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "import numpy as np, keras, keras_ersm\n"
        "from keras_ersm import models\n"
        "i = keras.Input((8, 8, 3))\n"
        "m = keras.Model(i, keras.layers.Conv2D(2, 3, name='c')(i))\n"
        "p = models.insert_energy_masks(m, ['c'])\n"
        "models.keep_maps(p, np.zeros((2, 8, 8, 3), 'float32'))\n"
        "models.build_classifier(m, 2)\n"
        "print('OK')\n"
    )
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


def test_public_names():
    assert set(keras_ersm.models.__all__) == {
        "build_classifier",
        "energy_mask_layers",
        "energy_terms",
        "insert_energy_masks",
        "insertion_points",
        "keep_maps",
    }
