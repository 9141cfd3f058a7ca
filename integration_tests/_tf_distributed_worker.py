"""Trains the tiny CNN on 1 device and under MirroredStrategy (TensorFlow).

Run in its own process: the 2 logical CPU devices must be configured before
TensorFlow initialises. Prints one JSON line with the results.
"""

import json
import os

os.environ["KERAS_BACKEND"] = "tensorflow"

import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

from _tiny import BatchLosses, build_model, data, mask_state  # noqa: E402

EPOCHS, BATCH_SIZE = 2, 8


def train(strategy):
    images, labels = data()
    if strategy is None:
        model = build_model()
    else:
        with strategy.scope():
            model = build_model()
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
    return {
        "losses": losses.losses,
        "mask_kernel": state["kernel"].ravel().tolist(),
        "mask_bias": state["bias"].ravel().tolist(),
        "keep": state["keep"].ravel().tolist(),
        "energy_loss": state["energy_loss"],
        "dense_kernel": model.get_layer("dense").kernel.numpy().ravel().tolist(),
    }


def main():
    logical = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(logical)
    results = {
        "replicas": strategy.num_replicas_in_sync,
        "single": train(None),
        "mirrored": train(strategy),
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
