"""Finding EnergyMask layers in a model."""

import keras

from keras_ersm.layers.energy_mask import EnergyMask


def energy_mask_layers(model):
    """Returns every `EnergyMask` layer of a model, nested models included.

    Args:
        model: a Keras model or layer.

    Returns:
        List of `EnergyMask` layers in graph order (depth first through
        nested models), each listed once.

    Examples:

    ```python
    import keras
    import keras_ersm
    model = keras.Sequential([
        keras.Input((8, 8, 4)),
        keras_ersm.EnergyMask(name="mask"),
    ])
    assert [l.name for l in keras_ersm.models.energy_mask_layers(model)] == ["mask"]
    ```
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "Invalid value for argument `model`. Expected a Keras model or "
            f"layer. Received: model={model!r}"
        )
    found, seen = [], set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, EnergyMask):
            found.append(layer)
        for child in getattr(layer, "layers", None) or []:
            visit(child)

    visit(model)
    return found
