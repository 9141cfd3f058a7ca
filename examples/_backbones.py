"""The backbones of `train_cifar.py`: each ends in an 8x8 feature map on 32x32.

`build_backbone(name, input_shape)` returns a Functional backbone;
`set_batchnorm_momentum(model, momentum)` sets the momentum of every
BatchNormalization layer, nested ones too.
"""

BACKBONES = (
    "cv_resnet_small",
    "hub_resnet_small",
    "tiny",
    "mobilenet_v3_small",
    "resnet50",
)


def build_backbone(name, input_shape):
    """A Functional backbone ending in a 4-D feature map (8x8 on 32x32)."""
    import keras

    if name == "tiny":
        inputs = keras.Input(input_shape)
        x = inputs
        for i, (filters, strides) in enumerate(((16, 1), (32, 2), (32, 1), (64, 2))):
            x = keras.layers.Conv2D(
                filters,
                3,
                strides=strides,
                padding="same",
                use_bias=False,
                name=f"conv{i}",
            )(x)
            x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
            x = keras.layers.ReLU(name=f"relu{i}")(x)
        return keras.Model(inputs, x, name="tiny_cnn")
    if name == "cv_resnet_small":
        import keras_cv

        # ResNet50V2's layout with two stacks of two blocks and 16/32
        # filters; the stem (stride 4) and stride-1 stacks give an 8x8 map.
        return keras_cv.models.ResNetV2Backbone(
            stackwise_filters=[16, 32],
            stackwise_blocks=[2, 2],
            stackwise_strides=[1, 1],
            include_rescaling=False,
            input_shape=input_shape,
            name="cv_resnet_small",
        )
    if name == "hub_resnet_small":
        import keras_hub

        # ResNet18's basic blocks, one per stack (KerasHub wants 64 filters
        # in the stem and first stack); stride-4 stem, 8x8 output on 32x32.
        return keras_hub.models.ResNetBackbone(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[3],
            stackwise_num_filters=[64, 128],
            stackwise_num_blocks=[1, 1],
            stackwise_num_strides=[1, 1],
            block_type="basic_block",
            image_shape=input_shape,
            name="hub_resnet_small",
        )
    if name == "mobilenet_v3_small":
        return keras.applications.MobileNetV3Small(
            input_shape=input_shape,
            include_top=False,
            weights=None,
            include_preprocessing=False,
        )
    if name == "resnet50":
        return keras.applications.ResNet50(
            input_shape=input_shape, include_top=False, weights=None
        )
    raise ValueError(
        f"Invalid value for argument `backbone`. Expected one of {BACKBONES}. "
        f"Received: backbone={name!r}"
    )


def set_batchnorm_momentum(model, momentum):
    """Sets the momentum of every BatchNormalization layer, nested ones too."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
        elif getattr(layer, "layers", None):
            set_batchnorm_momentum(layer, momentum)
