"""Accuracy under structured input occlusion, for any Keras classifier."""

import keras
import numpy as np

from keras_ersm import _validation
from keras_ersm.evaluation import _data, _graph, _progress

FILLS = ("mean", "zero", "noise")


class OcclusionResult:
    """Accuracy of a classifier under each occlusion setting.

    Attributes:
        clean_accuracy: accuracy (%) on the unoccluded images.
        accuracy: dict, setting name -> accuracy (%). Names are
            `"cutout_{size}px_{percent}pct"`,
            `"hide_and_seek_{size}px_p{percent}"`, `"object"` and
            `"background"`.
        covered: dict, setting name -> mean fraction of the pixels occluded.
        fill: the fill used.
        num_images: images evaluated.

    Examples:

    ```python
    from keras_ersm.evaluation import OcclusionResult
    result = OcclusionResult(
        clean_accuracy=90.0, accuracy={"object": 40.0},
        covered={"object": 0.2}, fill="mean", num_images=10)
    assert result.to_dict()["accuracy"]["object"] == 40.0
    ```
    """

    def __init__(self, clean_accuracy, accuracy, covered, fill, num_images):
        self.clean_accuracy = float(clean_accuracy)
        self.accuracy = {k: float(v) for k, v in accuracy.items()}
        self.covered = {k: float(v) for k, v in covered.items()}
        self.fill = fill
        self.num_images = int(num_images)

    def to_dict(self):
        """Returns the result as a JSON-serializable dict."""
        return {
            "clean_accuracy": self.clean_accuracy,
            "accuracy": dict(self.accuracy),
            "covered": dict(self.covered),
            "fill": self.fill,
            "num_images": self.num_images,
        }

    def plot(self, ax=None):
        """Bar chart of the accuracy per setting, clean first.

        Args:
            ax: optional matplotlib Axes. Defaults to `None` (a new Figure).

        Returns:
            The matplotlib `Figure`.
        """
        from keras_ersm import visualization

        return visualization.plot_occlusion(
            self, title=f"Accuracy under occlusion (fill: {self.fill})", ax=ax
        )

    def __repr__(self):
        return (
            f"OcclusionResult(clean_accuracy={self.clean_accuracy:.2f}, "
            f"settings={len(self.accuracy)})"
        )


def _check_numbers(name, values, kind):
    values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
    if kind == "size":
        expected = "a tuple of positive integer sizes in pixels"
    else:
        expected = "a tuple of numbers in [0, 1]"
    for v in values:
        if kind == "size":
            valid_type = _validation.is_int(v)
            valid = valid_type and v >= 1
        else:
            valid_type = _validation.is_number(v)
            valid = valid_type and 0.0 <= float(v) <= 1.0
        if not valid_type:
            raise _validation.invalid_type(name, expected, values)
        if not valid:
            raise _validation.invalid(name, expected, values)
    return values


def cutout_masks(rng, batch, height, width, size, fraction):
    """Boolean `(B, H, W)` masks of random `size x size` squares.

    `ceil(fraction * H * W / size**2)` squares are placed uniformly inside
    each image (they may overlap, so the covered fraction can be lower).
    """
    count = int(np.ceil(fraction * height * width / float(size * size)))
    masks = np.zeros((batch, height, width), dtype=bool)
    if count == 0:
        return masks
    size_h, size_w = min(size, height), min(size, width)
    tops = rng.integers(0, height - size_h + 1, size=(batch, count))
    lefts = rng.integers(0, width - size_w + 1, size=(batch, count))
    rows = np.arange(height)[None, None, :]
    cols = np.arange(width)[None, None, :]
    in_rows = (rows >= tops[..., None]) & (rows < tops[..., None] + size_h)
    in_cols = (cols >= lefts[..., None]) & (cols < lefts[..., None] + size_w)
    # (B, count, H, 1) & (B, count, 1, W) -> any over squares.
    return np.any(in_rows[..., :, None] & in_cols[..., None, :], axis=1)


def hide_and_seek_masks(rng, batch, height, width, size, probability):
    """Boolean `(B, H, W)` masks hiding each `size x size` grid cell with
    probability `probability` (Hide-and-Seek, Singh and Lee, 2017)."""
    grid_h, grid_w = -(-height // size), -(-width // size)
    hidden = rng.random((batch, grid_h, grid_w)) < probability
    masks = np.repeat(np.repeat(hidden, size, axis=1), size, axis=2)
    return masks[:, :height, :width]


def _fill_values(images, fill, rng):
    """Fill image `(B, H, W, C)` for the occluded pixels."""
    if fill == "zero":
        return np.zeros_like(images)
    mean = images.mean(axis=(1, 2), keepdims=True)
    if fill == "mean":
        return np.broadcast_to(mean, images.shape)
    std = images.std(axis=(1, 2), keepdims=True)
    return (mean + std * rng.standard_normal(images.shape)).astype(images.dtype)


def occlusion_robustness(
    model,
    data,
    patch_sizes=(4, 8),
    fractions=(0.1, 0.25, 0.5),
    hide_sizes=(4, 8),
    hide_probability=0.5,
    object_masks=None,
    fill="mean",
    seed=0,
    batch_size=32,
    data_format=None,
    verbose=0,
):
    """Accuracy of any Keras image classifier under structured occlusion.

    Settings: Cutout-style squares of each size in `patch_sizes` covering
    each fraction in `fractions` of the image; Hide-and-Seek grids of cells
    of each size in `hide_sizes`, each hidden with `hide_probability`; and,
    when `object_masks` are given, occlusion of the object (`"object"`) and
    of everything but the object (`"background"`). Occluded pixels are
    replaced per image and channel by the mean, zero, or Gaussian noise with
    the image's mean and standard deviation. Every setting draws from its
    own generator seeded by `(seed, setting index)`, so results are
    reproducible. The model needs no mask layer: the same call evaluates the
    baseline.

    Args:
        model: a Keras classifier taking one image tensor.
            A one-unit output is read as a logit (class 1 when > 0) unless
            the final layer has a sigmoid or softmax activation (class 1
            when > 0.5).
        data: labelled data: `(x, y)` arrays, a `tf.data.Dataset`, an
            iterable of `(x, y)` batches or a `keras.utils.PyDataset`.
        patch_sizes: Cutout square sides in pixels. Defaults to `(4, 8)`.
        fractions: image fractions covered by Cutout squares (overlaps
            allowed, `covered` reports the actual fraction). Defaults to
            `(0.1, 0.25, 0.5)`.
        hide_sizes: Hide-and-Seek cell sides in pixels. Defaults to `(4, 8)`.
        hide_probability: probability of hiding each cell. Defaults to `0.5`.
        object_masks: optional array `(N, H, W)` (or `(N, H, W, 1)`) of
            object masks, in the order of the images in `data`. Defaults to
            `None`.
        fill: `"mean"`, `"zero"` or `"noise"`. Defaults to `"mean"`.
        seed: int seed. Defaults to `0`.
        batch_size: images per forward pass (arrays only). Defaults to `32`.
        data_format: layout of the images, or `None` for
            `keras.config.image_data_format()`. Defaults to `None`.
        verbose: `0` (silent), `1` or `"auto"` (a `keras.utils.Progbar`
            per batch, as `model.evaluate` shows) or `2` (one line at the
            end). Defaults to `0`.

    Returns:
        An `OcclusionResult` with `.clean_accuracy`, `.accuracy` (setting ->
        %), `.covered`, `.to_dict()` and `.plot()`.

    Examples:

    ```python
    import numpy as np
    import keras
    import keras_ersm

    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, padding="same"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ])
    x = np.random.rand(8, 16, 16, 3).astype("float32")
    y = np.random.randint(0, 2, 8)
    result = keras_ersm.evaluation.occlusion_robustness(model, (x, y))
    print(result.clean_accuracy, result.accuracy["cutout_8px_50pct"])
    ```
    """
    if not isinstance(model, keras.Model):
        raise _graph.invalid("model", "a Keras model", model)
    patch_sizes = _check_numbers("patch_sizes", patch_sizes, "size")
    fractions = _check_numbers("fractions", fractions, "fraction")
    hide_sizes = _check_numbers("hide_sizes", hide_sizes, "size")
    _check_numbers("hide_probability", hide_probability, "fraction")
    if fill not in FILLS:
        raise _graph.invalid("fill", f"one of {FILLS}", fill)
    _data.check_batch_size(batch_size)
    data_format = data_format or keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise _graph.invalid(
            "data_format", "'channels_last' or 'channels_first'", data_format
        )
    if object_masks is not None:
        object_masks = np.asarray(object_masks)
        if object_masks.ndim == 4 and object_masks.shape[-1] == 1:
            object_masks = object_masks[..., 0]
        if object_masks.ndim != 3:
            raise _graph.invalid(
                "object_masks",
                "an array of shape (N, H, W)",
                f"array of shape {object_masks.shape}",
            )
        object_masks = object_masks > 0

    settings = []
    for size in patch_sizes:
        for fraction in fractions:
            settings.append(
                (
                    f"cutout_{size}px_{round(fraction * 100)}pct",
                    "cutout",
                    size,
                    fraction,
                )
            )
    for size in hide_sizes:
        settings.append(
            (
                f"hide_and_seek_{size}px_p{round(hide_probability * 100)}",
                "has",
                size,
                hide_probability,
            )
        )
    if object_masks is not None:
        settings += [("object", "object", 0, 0), ("background", "background", 0, 0)]
    threshold = _data.output_threshold(model)
    rngs = [np.random.default_rng([seed, i]) for i in range(len(settings))]
    correct = np.zeros(len(settings), dtype="int64")
    covered = np.zeros(len(settings), dtype="float64")
    clean = total = 0
    batches = _data.iter_batches(data, batch_size, model=model)
    for x, y in _progress.track(batches, data, batch_size, verbose):
        x = np.asarray(x)
        if x.ndim != 4:
            raise _graph.invalid(
                "data", "images of shape (B, H, W, C)", f"x of shape {x.shape}"
            )
        labels = _data.labels_to_classes(y)
        images = np.moveaxis(x, 1, -1) if data_format == "channels_first" else x
        b, height, width = images.shape[:3]
        clean += _correct(model, x, labels, threshold)
        batch_objects = None
        if object_masks is not None:
            batch_objects = object_masks[total : total + b]
            if batch_objects.shape != (b, height, width):
                raise _graph.invalid(
                    "object_masks",
                    f"one (H, W) = {(height, width)} mask per image",
                    f"array of shape {object_masks.shape}",
                )
        for i, (_, kind, size, amount) in enumerate(settings):
            rng = rngs[i]
            if kind == "cutout":
                masks = cutout_masks(rng, b, height, width, size, amount)
            elif kind == "has":
                masks = hide_and_seek_masks(rng, b, height, width, size, amount)
            elif kind == "object":
                masks = batch_objects
            else:
                masks = ~batch_objects
            filled = _fill_values(images, fill, rng)
            occluded = np.where(masks[..., None], filled, images).astype(x.dtype)
            if data_format == "channels_first":
                occluded = np.moveaxis(occluded, -1, 1)
            correct[i] += _correct(model, occluded, labels, threshold)
            covered[i] += masks.mean(axis=(1, 2)).sum()
        total += b
    if total == 0:
        raise _graph.invalid("data", "at least one labelled image", "empty data")
    if object_masks is not None and len(object_masks) != total:
        raise _graph.invalid(
            "object_masks",
            f"one mask per image ({total} images)",
            f"array of shape {object_masks.shape}",
        )
    names = [s[0] for s in settings]
    return OcclusionResult(
        100.0 * clean / total,
        {n: 100.0 * c / total for n, c in zip(names, correct, strict=True)},
        {n: c / total for n, c in zip(names, covered, strict=True)},
        fill,
        total,
    )


def _correct(model, x, labels, threshold):
    predictions = model.predict_on_batch(x)
    classes = _data.predictions_to_classes(predictions, threshold)
    return int((classes == labels).sum())
