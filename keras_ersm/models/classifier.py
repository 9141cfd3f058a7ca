"""The paper's recipe: backbone -> EnergyMask -> global average pool -> Dense."""

import keras

from keras_ersm import _validation
from keras_ersm.layers.energy_mask import EnergyMask
from keras_ersm.models import insertion
from keras_ersm.models.utils import energy_mask_layers


def _freeze(model):
    """Freezes every layer except EnergyMask layers (nested models too)."""
    for layer in model.layers:
        if isinstance(layer, EnergyMask):
            continue
        if energy_mask_layers(layer):
            _freeze(layer)
        else:
            layer.trainable = False


def _walk(layer):
    yield layer
    for child in getattr(layer, "layers", None) or []:
        if child is not layer:
            yield from _walk(child)


def backbone_data_format(backbone):
    """The data format of a backbone's feature maps, read from its layers.

    Every layer with a `data_format` attribute (convolutions, pooling,
    nested backbones' layers) must agree; a backbone without any such layer
    follows `keras.config.image_data_format()`.

    Raises:
        ValueError: the layers disagree.
    """
    formats = {
        layer.data_format
        for layer in _walk(backbone)
        if getattr(layer, "data_format", None) in ("channels_last", "channels_first")
    }
    if len(formats) > 1:
        raise ValueError(
            "Invalid value for argument `backbone`. Its layers mix "
            "'channels_last' and 'channels_first', so the data format of its "
            "feature maps cannot be known. Pass `data_format=` (an EnergyMask "
            f"argument) explicitly. Received: backbone={backbone.name!r}"
        )
    return formats.pop() if formats else keras.config.image_data_format()


def build_classifier(
    backbone,
    num_classes,
    mask_at="output",
    freeze_backbone=True,
    activation=None,
    dropout=0.0,
    name=None,
    **mask_kwargs,
):
    """Builds the ERSM image classifier on top of a backbone.

    The paper's recipe: backbone -> `EnergyMask` -> global average pooling
    -> `Dense(num_classes)`. With `mask_at=None` the same model is built
    without any mask, which is the baseline to compare with. Masks can also
    go inside the backbone (`mask_at="P3"`, a layer name, or several points;
    see `insert_energy_masks`).

    The backbone is copied (`insert_energy_masks`' cloning, weights
    included): the classifier is one flat Functional graph (backbone layers,
    masks, pooling, head) and the `backbone` passed in is left unchanged, so
    the baseline and the masked classifier can be built from the same
    backbone and trained independently.

    Args:
        backbone: a Functional model with a single 4-D feature-map output,
            e.g. `keras.applications.ResNet50(include_top=False,
            weights=None)`, a KerasCV or a KerasHub backbone.
        num_classes: int >= 1, number of output units.
        mask_at: where the masks go: `"output"` (after the backbone, the
            paper's recipe), any point or points accepted by
            `insert_energy_masks` (a dict gives per-point arguments), or
            `None` for the baseline without mask. Defaults to `"output"`.
        freeze_backbone: bool. If `True`, every backbone layer is frozen
            (`trainable=False`, so batch normalization also runs in
            inference mode) and only the masks and the head train, as in
            the paper. Defaults to `True`.
        activation: activation of the final `Dense` layer. Defaults to
            `None` (logits; use a loss with `from_logits=True`).
        dropout: float in [0, 1), rate of a `Dropout` before the head (none
            when 0). Defaults to `0.0`.
        name: name of the classifier. Defaults to `None`
            (`"<backbone>_ersm_classifier"`, or `"<backbone>_classifier"`
            without mask).
        **mask_kwargs: arguments of every inserted `EnergyMask`, e.g.
            `patch_size=2`. `data_format` defaults to the backbone's (read
            from its layers, e.g. a `channels_first` convolution), which
            the pooling also uses.

    Returns:
        A Functional `keras.Model` from the backbone's inputs to
        `(batch, num_classes)` outputs.

    Examples:

    ```python
    import numpy as np
    import keras
    import keras_ersm

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv")(inputs)
    backbone = keras.Model(inputs, x)

    model = keras_ersm.models.build_classifier(backbone, num_classes=10)
    baseline = keras_ersm.models.build_classifier(backbone, 10, mask_at=None)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    x, y = np.random.rand(8, 32, 32, 3), np.random.randint(0, 10, (8,))
    model.fit(x, y, epochs=1, verbose=0)
    assert len(keras_ersm.models.energy_mask_layers(model)) == 1
    assert not keras_ersm.models.energy_mask_layers(baseline)
    ```
    """
    insertion.check_functional(backbone, "backbone")
    num_classes = _validation.check_int("num_classes", num_classes, 1)
    freeze_backbone = _validation.check_bool("freeze_backbone", freeze_backbone)
    dropout = _validation.check_number(
        "dropout", dropout, minimum=0.0, maximum=1.0, maximum_open=True
    )
    outputs = backbone.outputs
    if len(outputs) != 1 or len(outputs[0].shape) != 4:
        shapes = [tuple(o.shape) for o in outputs]
        raise ValueError(
            "Invalid value for argument `backbone`. Expected a model with a "
            "single 4-D feature-map output (for keras.applications, build it "
            f"with include_top=False). Received: backbone={backbone.name!r} "
            f"with output shapes {shapes}"
        )
    data_format = mask_kwargs.get("data_format") or backbone_data_format(backbone)
    if mask_at is None:
        if mask_kwargs:
            raise ValueError(
                "EnergyMask arguments were given with mask_at=None (no "
                f"mask). Received: mask_kwargs={mask_kwargs!r}"
            )
        plans = {}
    else:
        plans = insertion.plan_masks(
            backbone, mask_at, False, {**mask_kwargs, "data_format": data_format}
        )
    features, _ = insertion.clone_with_masks(backbone, plans)
    if freeze_backbone:
        _freeze(features)
    taken = insertion.all_names(features)
    x = keras.layers.GlobalAveragePooling2D(
        data_format=data_format, name=insertion.unique_name("avg_pool", taken)
    )(features.outputs[0])
    if dropout:
        x = keras.layers.Dropout(
            dropout, name=insertion.unique_name("head_dropout", taken)
        )(x)
    x = keras.layers.Dense(
        num_classes,
        activation=activation,
        name=insertion.unique_name("predictions", taken),
    )(x)
    if name is None:
        suffix = "_classifier" if mask_at is None else "_ersm_classifier"
        name = backbone.name + suffix
    return keras.Model(features.input, x, name=name)
