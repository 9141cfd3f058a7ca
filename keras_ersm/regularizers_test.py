"""`EnergyRegularizer` is the `EnergyMask` loss term, not a Keras weight
regularizer (issue 14 item 6)."""

import json

import keras
import numpy as np
import pytest

import keras_ersm
from keras_ersm import EnergyRegularizer

# What `serialize_keras_object` wrote while `EnergyRegularizer` subclassed
# `keras.regularizers.Regularizer` (commit 51ab256): configs and `.keras`
# files holding it must keep loading.
_OLD_SERIALIZED = {
    "module": "keras_ersm.regularizers",
    "class_name": "EnergyRegularizer",
    "config": {"unary": 0.5, "pairwise": 0.25, "weight": 2.0},
    "registered_name": "keras_ersm>EnergyRegularizer",
}


def test_is_not_a_keras_weight_regularizer():
    assert not isinstance(EnergyRegularizer(), keras.regularizers.Regularizer)


def test_as_a_weight_regularizer_it_raises_a_clear_type_error():
    layer = keras.layers.Dense(4, kernel_regularizer=EnergyRegularizer())
    layer(np.ones((2, 3), "float32"))
    with pytest.raises(TypeError, match="not a Keras weight regularizer"):
        layer.losses  # noqa: B018 (the kernel's regularizer runs here)


def test_serialization_round_trip():
    reg = EnergyRegularizer(0.5, 0.25, 2.0)
    data = json.loads(json.dumps(keras.saving.serialize_keras_object(reg)))
    assert data == _OLD_SERIALIZED
    for restored in (
        keras.saving.deserialize_keras_object(data),
        keras.regularizers.deserialize(data),
        EnergyRegularizer.from_config(reg.get_config()),
    ):
        assert isinstance(restored, EnergyRegularizer)
        assert restored.get_config() == reg.get_config()


def test_old_config_builds_an_energy_mask():
    layer = keras_ersm.EnergyMask(energy_regularizer=dict(_OLD_SERIALIZED))
    assert isinstance(layer.energy_regularizer, EnergyRegularizer)
    assert layer.energy_regularizer.weight == 2.0
    # And the layer still adds its energy loss.
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    layer(x)
    assert len(layer.losses) == 1
    assert float(keras.ops.convert_to_numpy(layer.losses[0])) > 0.0
