"""Trains the tiny CNN on 1 device, DataParallel and ModelParallel (JAX).

Run in its own process with XLA_FLAGS=--xla_force_host_platform_device_count=4
set before JAX starts; prints one JSON line with the results.
"""

import json
import os

os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402
import keras  # noqa: E402
from _tiny import BatchLosses, build_model, data, mask_state  # noqa: E402

EPOCHS, BATCH_SIZE = 2, 8


def train(distribution):
    keras.distribution.set_distribution(distribution)
    try:
        model = build_model()
        images, labels = data()
        losses = BatchLosses()
        model.fit(
            images,
            labels,
            batch_size=BATCH_SIZE,
            epochs=EPOCHS,
            shuffle=False,
            verbose=0,
            callbacks=[losses],
        )
        state = mask_state(model, images[:BATCH_SIZE])
        kernel = model.get_layer("dense").kernel.value
        return {
            "losses": losses.losses,
            "mask_kernel": state["kernel"].ravel().tolist(),
            "mask_bias": state["bias"].ravel().tolist(),
            "keep": state["keep"].ravel().tolist(),
            "energy_loss": state["energy_loss"],
            "dense_kernel": keras.ops.convert_to_numpy(kernel).ravel().tolist(),
            "dense_kernel_shard": list(kernel.sharding.shard_shape(kernel.shape)),
            "dense_kernel_devices": len(kernel.sharding.device_set),
        }
    finally:
        keras.distribution.set_distribution(None)


def main():
    devices = keras.distribution.list_devices("cpu")
    mesh = keras.distribution.DeviceMesh(
        shape=(2, 2), axis_names=("batch", "model"), devices=devices
    )
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["dense/kernel"] = (None, "model")
    results = {
        "num_devices": len(jax.devices()),
        "single": train(None),
        "data_parallel": train(keras.distribution.DataParallel(devices=devices)),
        "model_parallel": train(
            keras.distribution.ModelParallel(
                layout_map=layout_map, batch_dim_name="batch"
            )
        ),
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
