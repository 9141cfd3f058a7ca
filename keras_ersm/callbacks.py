"""Keras callbacks that evaluate masks during `fit`.

Every callback stores its data in the constructor (cheap: nothing is built
or run there) and evaluates in `on_epoch_end` on epochs `0, every,
2 * every, ...` and on the last epoch. Figures go into `logs` under a prefix
with a slash (`"deletion/energy_auc"`, `"occlusion/clean"`,
`"mask/mean_keep"`), so `History`, and `CSVLogger` and `TensorBoard` listed
after the callback, record them; `CSVLogger` writes `NA` on epochs where a
callback did not run (it fixes its columns at the first epoch, where every
callback runs). Under JAX, evaluation runs on the model's synced state
(`model.jax_state_sync()` is called first; a no-op when already synced).
"""

import os

import keras

from keras_ersm import _validation, evaluation, visualization


class _EvaluationCallback(keras.callbacks.Callback):
    def __init__(self, every, prefix):
        super().__init__()
        self.every = _validation.check_int("every", every, 1)
        self.prefix = _validation.check_str("prefix", prefix)
        self.last_result = None

    def _should_run(self, epoch):
        epochs = (self.params or {}).get("epochs")
        return epoch % self.every == 0 or (epochs is not None and epoch == epochs - 1)

    def on_epoch_end(self, epoch, logs=None):
        if not self._should_run(epoch):
            return
        sync = getattr(self.model, "jax_state_sync", None)
        if callable(sync):
            sync()
        self.last_result = self.evaluate(epoch)
        if logs is not None:
            for name, value in self.scalars(self.last_result).items():
                logs[f"{self.prefix}/{name}"] = float(value)

    def evaluate(self, epoch):
        raise NotImplementedError

    def scalars(self, result):
        return {}


class DeletionCurve(_EvaluationCallback):
    """Logs the deletion-curve AUC of each order during training.

    Runs `keras_ersm.evaluation.deletion_curve` on epochs `0, every, ...`
    and the last, and writes `"{prefix}/{order}_auc"` (trapezoid of the
    accuracy in % over the deleted fraction) into `logs`.

    Args:
        data: labelled validation data, as for `deletion_curve`.
        layer: name of the `EnergyMask` layer, or `None` for the last one.
            Defaults to `None`.
        orders: deletion orders, names among those of `deletion_curve`
            (`"energy"`, `"kept"`, `"magnitude"`, `"random"`,
            `"grad_cam"`). Defaults to `("energy", "magnitude", "random")`.
        every: evaluate every this many epochs. Defaults to `1`.
        prefix: prefix of the log keys. Defaults to `"deletion"`.
        **kwargs: other `deletion_curve` arguments (`direction`, `steps`,
            `replace_keep`, `batch_size`, `seed`, ...).

    Examples:

    ```python
    import numpy as np
    import keras
    import keras_ersm

    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, padding="same"),
        keras_ersm.EnergyMask(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.rand(16, 8, 8, 3).astype("float32")
    y = np.random.randint(0, 2, 16)
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[
        keras_ersm.callbacks.DeletionCurve((x, y), steps=5)])
    assert "deletion/energy_auc" in history.history
    ```
    """

    def __init__(
        self,
        data,
        layer=None,
        orders=("energy", "magnitude", "random"),
        every=1,
        prefix="deletion",
        **kwargs,
    ):
        super().__init__(every, prefix)
        self.data = data
        self.layer = layer
        self.orders = tuple(orders)
        self.kwargs = kwargs

    def evaluate(self, epoch):
        return evaluation.deletion_curve(
            self.model, self.data, layer=self.layer, orders=self.orders, **self.kwargs
        )

    def scalars(self, result):
        return {f"{order}_auc": auc for order, auc in result.auc.items()}


class OcclusionRobustness(_EvaluationCallback):
    """Logs accuracy under occlusion during training.

    Runs `keras_ersm.evaluation.occlusion_robustness` on epochs `0, every,
    ...` and the last, and writes `"{prefix}/clean"` and
    `"{prefix}/{setting}"` (accuracy in %) into `logs`. Works on any
    classifier, with or without a mask layer.

    Args:
        data: labelled validation data, as for `occlusion_robustness`.
        every: evaluate every this many epochs. Defaults to `1`.
        prefix: prefix of the log keys. Defaults to `"occlusion"`.
        **kwargs: other `occlusion_robustness` arguments (`patch_sizes`,
            `fractions`, `hide_sizes`, `object_masks`, `fill`, `seed`, ...).

    Examples:

    ```python
    import numpy as np
    import keras
    import keras_ersm

    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, padding="same"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.rand(16, 8, 8, 3).astype("float32")
    y = np.random.randint(0, 2, 16)
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[
        keras_ersm.callbacks.OcclusionRobustness(
            (x, y), patch_sizes=(4,), fractions=(0.25,), hide_sizes=())])
    assert "occlusion/cutout_4px_25pct" in history.history
    ```
    """

    def __init__(self, data, every=1, prefix="occlusion", **kwargs):
        super().__init__(every, prefix)
        self.data = data
        self.kwargs = kwargs

    def evaluate(self, epoch):
        return evaluation.occlusion_robustness(self.model, self.data, **self.kwargs)

    def scalars(self, result):
        return {"clean": result.clean_accuracy, **result.accuracy}


class MaskStatistics(_EvaluationCallback):
    """Logs statistics of an EnergyMask layer's keep maps during training.

    Runs `keras_ersm.evaluation.mask_statistics` on epochs `0, every, ...`
    and the last, and writes `"{prefix}/mean_keep"`,
    `"{prefix}/active_fraction"`, `"{prefix}/entropy"`, `"{prefix}/spread"`,
    `"{prefix}/mean_keep_min"` and `"{prefix}/mean_keep_max"` into `logs`.

    Args:
        data: images or (labelled) data, as for `mask_statistics`.
        layer: name of the `EnergyMask` layer, or `None` for the last one.
            Defaults to `None`.
        every: evaluate every this many epochs. Defaults to `1`.
        prefix: prefix of the log keys. Defaults to `"mask"`.
        batch_size: images per forward pass. Defaults to `32`.

    Examples:

    ```python
    import numpy as np
    import keras
    import keras_ersm

    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, padding="same"),
        keras_ersm.EnergyMask(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.rand(16, 8, 8, 3).astype("float32")
    y = np.random.randint(0, 2, 16)
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[
        keras_ersm.callbacks.MaskStatistics(x)])
    assert "mask/mean_keep" in history.history
    ```
    """

    def __init__(self, data, layer=None, every=1, prefix="mask", batch_size=32):
        super().__init__(every, prefix)
        self.data = data
        self.layer = layer
        self.batch_size = batch_size

    def evaluate(self, epoch):
        return evaluation.mask_statistics(
            self.model, self.data, layer=self.layer, batch_size=self.batch_size
        )

    def scalars(self, result):
        return dict(result.values)


class MaskSnapshot(_EvaluationCallback):
    """Saves overlays of an EnergyMask layer's keep maps on images.

    On epochs `0, every, ...` and the last, draws each image above and,
    below it, its keep map (nearest neighbour, colormap `"jet"` in [0, 1],
    with a colorbar) over the image, and writes the figure as a PNG file
    `"{directory}/{layer}_epoch_{epoch:04d}.png"` and/or as a TensorBoard
    image `"{prefix}/keep_maps"` (step: the epoch) in
    `"{tensorboard_dir}/keep_maps"`. Give `tensorboard_dir` the `log_dir`
    of `keras.callbacks.TensorBoard`, and the images appear next to its
    `train` and `validation` logs, as the run `keep_maps`. Writes
    `"{prefix}/mean_keep"` of the snapshot images into `logs`.

    Args:
        images: array of a few images `(B, H, W, C)`.
        directory: folder for the PNG files (created if needed), or `None`
            for no PNG files (then `tensorboard_dir` is needed).
        layer: name of the `EnergyMask` layer, or `None` for the last one.
            Defaults to `None`.
        every: save every this many epochs. Defaults to `1`.
        max_images: at most this many images per snapshot. Defaults to `8`.
        prefix: prefix of the log key and of the TensorBoard image tag.
            Defaults to `"snapshot"`.
        tensorboard_dir: a TensorBoard log directory, or `None` for no
            TensorBoard images. Needs TensorFlow and TensorBoard
            (`pip install tensorflow tensorboard`), whatever the Keras
            backend. Defaults to `None`.

    Examples:

    ```python
    import numpy as np
    import keras
    import keras_ersm

    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, padding="same"),
        keras_ersm.EnergyMask(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.rand(16, 8, 8, 3).astype("float32")
    y = np.random.randint(0, 2, 16)
    snapshots = keras_ersm.callbacks.MaskSnapshot(x[:4], "snapshots")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[snapshots])
    print(snapshots.paths)  # ['snapshots/<mask name>_epoch_0000.png']
    ```

    With TensorBoard (the images land in `logs/keep_maps`):

    ```python
    logs = "logs"
    callbacks = [
        keras_ersm.callbacks.MaskSnapshot(x[:4], None, tensorboard_dir=logs),
        keras.callbacks.TensorBoard(logs),
    ]
    ```
    """

    def __init__(
        self,
        images,
        directory,
        layer=None,
        every=1,
        max_images=8,
        prefix="snapshot",
        tensorboard_dir=None,
    ):
        super().__init__(every, prefix)
        if directory is not None and not isinstance(directory, (str, os.PathLike)):
            raise _validation.invalid_type("directory", "a path or None", directory)
        if tensorboard_dir is not None and not isinstance(
            tensorboard_dir, (str, os.PathLike)
        ):
            raise _validation.invalid_type(
                "tensorboard_dir", "a path or None", tensorboard_dir
            )
        if directory is None and tensorboard_dir is None:
            raise ValueError(
                "Invalid value for argument `directory`. Expected a path, or "
                "a `tensorboard_dir` to write to instead. Received: "
                "directory=None and tensorboard_dir=None"
            )
        max_images = _validation.check_int("max_images", max_images, 1)
        self.images = images
        self.directory = None if directory is None else os.fspath(directory)
        self.tensorboard_dir = (
            None if tensorboard_dir is None else os.fspath(tensorboard_dir)
        )
        self.layer = layer
        self.max_images = max_images
        self.paths = []
        self._writer = None

    def evaluate(self, epoch):
        images = self.images[: self.max_images]
        mask, keep = evaluation.statistics.mask_keep_maps(
            self.model, images, self.layer
        )
        figure = visualization.overlay_keep(
            images,
            keep,
            data_format=mask.data_format,
            max_images=self.max_images,
            title=f"Keep maps of {mask.name} after epoch {epoch + 1}",
        )
        if self.directory is not None:
            os.makedirs(self.directory, exist_ok=True)
            path = os.path.join(self.directory, f"{mask.name}_epoch_{epoch:04d}.png")
            figure.savefig(path, dpi=80)
            self.paths.append(path)
        if self.tensorboard_dir is not None:
            self._write_image(visualization.figure_to_rgb(figure, dpi=80), epoch)
        return keep

    def _write_image(self, rgb, epoch):
        try:
            import tensorflow as tf
        except ImportError as error:
            raise ImportError(
                "MaskSnapshot(tensorboard_dir=...) needs TensorFlow and "
                "TensorBoard: pip install tensorflow tensorboard"
            ) from error
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(
                os.path.join(self.tensorboard_dir, "keep_maps")
            )
        with self._writer.as_default():
            tf.summary.image(f"{self.prefix}/keep_maps", rgb[None], step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def scalars(self, result):
        return {"mean_keep": float(result.mean())}
