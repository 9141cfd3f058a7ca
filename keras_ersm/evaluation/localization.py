"""Does the keep map land on the object? Localization against object masks."""

import numpy as np

from keras_ersm.evaluation import _graph, _progress, gradients, statistics

METRICS = ("mass_inside", "pointing_game", "iou")


class LocalizationResult:
    """Localization scores of the keep map (and of Grad-CAM).

    Attributes:
        scores: dict, map name (`"keep"`, `"kept"`, `"grad_cam"`) -> dict
            with `"mass_inside"` (fraction of the map's mass inside the
            object), `"pointing_game"` (fraction of images whose highest
            cell contains object pixels) and `"iou"` (IoU of map > 0.5 with
            the object; the kept map and Grad-CAM are first divided by their
            per-image maximum). All in [0, 1], averaged over images.
        object_fraction: mean fraction of the image covered by the object
            (what a uniform map scores as `mass_inside`).
        num_images: images evaluated.
        layer: name of the `EnergyMask` layer.

    Examples:

    ```python
    from keras_ersm.evaluation import LocalizationResult
    scores = {"keep": {"mass_inside": 0.6, "pointing_game": 0.9, "iou": 0.4}}
    result = LocalizationResult(scores, object_fraction=0.2, num_images=10,
                                layer="mask")
    figure = result.plot()
    ```
    """

    def __init__(self, scores, object_fraction, num_images, layer):
        self.scores = {
            m: {k: float(v) for k, v in s.items()} for m, s in scores.items()
        }
        self.object_fraction = float(object_fraction)
        self.num_images = int(num_images)
        self.layer = layer

    def to_dict(self):
        """Returns the result as a JSON-serializable dict."""
        return {
            "scores": {m: dict(s) for m, s in self.scores.items()},
            "object_fraction": self.object_fraction,
            "num_images": self.num_images,
            "layer": self.layer,
        }

    def plot(self, ax=None):
        """Grouped bars, each metric for each map, drawn into the matplotlib
        Axes `ax` (a new Figure for `None`); returns the `Figure`."""
        from keras_ersm import visualization

        return visualization.plot_localization(self, ax=ax)

    def __repr__(self):
        return f"LocalizationResult(layer={self.layer!r}, scores={self.scores})"


def upsample_nearest(maps, height, width):
    """Nearest-neighbour resize of `(B, h, w)` maps to `(B, height, width)`."""
    h, w = maps.shape[1:]
    rows = (np.arange(height) * h) // height
    cols = (np.arange(width) * w) // width
    return maps[:, rows][:, :, cols]


def normalise_peak(maps):
    """`(B, h, w)` maps divided by their per-image maximum (all-zero maps
    stay zero)."""
    peak = maps.reshape(len(maps), -1).max(axis=1)[:, None, None]
    return maps / np.maximum(peak, 1e-12)


def kept_map(keep, norms):
    """The kept map: `keep_i * ||x_i||` divided by its per-image maximum."""
    return normalise_peak(keep * norms)


def localization_scores(maps, objects):
    """Mass inside, pointing game and IoU of `(B, h, w)` maps in [0, 1]."""
    b, height, width = objects.shape
    up = upsample_nearest(maps, height, width)
    mass = (up * objects).sum(axis=(1, 2)) / np.maximum(up.sum(axis=(1, 2)), 1e-12)
    # Object pixels per cell of the map's grid.
    h, w = maps.shape[1:]
    cell_rows = (np.arange(height) * h) // height
    cell_cols = (np.arange(width) * w) // width
    cells = np.zeros((b, h, w))
    np.add.at(cells, (slice(None), cell_rows[:, None], cell_cols[None, :]), objects)
    best = maps.reshape(b, -1).argmax(axis=1)
    pointing = cells.reshape(b, -1)[np.arange(b), best] > 0
    active = up > 0.5
    union = (active | objects).sum(axis=(1, 2))
    iou = np.where(
        union > 0, (active & objects).sum(axis=(1, 2)) / np.maximum(union, 1), 1.0
    )
    return {
        "mass_inside": float(mass.mean()),
        "pointing_game": float(pointing.mean()),
        "iou": float(iou.mean()),
    }


def mask_localization(
    model,
    images,
    object_masks,
    layer=None,
    grad_cam=True,
    batch_size=32,
    verbose=0,
):
    """Localization of an EnergyMask layer's keep map against object masks.

    Three maps (two without Grad-CAM) are stretched to the image by nearest
    neighbour and compared with the object masks: the keep map; the kept
    map, `keep_i * ||x_i||`, the norm of what the mask lets through at each
    token (class-agnostic like the keep, but it also sees the features'
    magnitude, which the scores discard by reading the tokens normalised);
    and Grad-CAM at the layer's output, for the predicted class. Metrics:
    fraction of the map's mass inside the object, pointing game (the
    highest cell of the map contains object pixels), and IoU of map > 0.5
    with the object (the kept map and Grad-CAM divided by their per-image
    maximum first).

    Args:
        model: a Functional or Sequential Keras model with an `EnergyMask`.
        images: array of images `(N, H, W, C)` (or `(N, C, H, W)` for a
            channels_first layer).
        object_masks: array `(N, H, W)` (or `(N, H, W, 1)`), non-zero on
            the object.
        layer: name or instance of the `EnergyMask` layer, or `None` for the
            model's last one. Defaults to `None`.
        grad_cam: whether to score Grad-CAM too. Defaults to `True`.
        batch_size: images per forward pass. Defaults to `32`.
        verbose: `0` (silent), `1` or `"auto"` (a `keras.utils.Progbar`
            per batch of the Grad-CAM pass, or of the keep maps without
            it) or `2` (one line at the end). Defaults to `0`.

    Returns:
        A `LocalizationResult` with `.scores["keep"]`, `.scores["kept"]`
        (and `.scores["grad_cam"]`), `.object_fraction`, `.to_dict()`,
        `.plot()`.

    Examples:

    ```python
    import numpy as np
    import keras
    import keras_ersm

    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, padding="same"),
        keras_ersm.EnergyMask(patch_size=4),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ])
    images = np.random.rand(4, 16, 16, 3).astype("float32")
    objects = np.zeros((4, 16, 16), bool)
    objects[:, 4:12, 4:12] = True
    result = keras_ersm.evaluation.mask_localization(model, images, objects)
    print(result.scores["keep"]["mass_inside"], result.object_fraction)
    ```
    """
    mask = _graph.resolve_mask_layer(model, layer)
    images = np.asarray(images)
    objects = np.asarray(object_masks)
    if objects.ndim == 4 and objects.shape[-1] == 1:
        objects = objects[..., 0]
    if images.ndim != 4:
        raise _graph.invalid(
            "images", "an array of shape (N, H, W, C)", f"array of shape {images.shape}"
        )
    if mask.data_format == "channels_first":
        spatial = images.shape[2:4]
    else:
        spatial = images.shape[1:3]
    if objects.shape != (images.shape[0], *spatial):
        raise ValueError(
            "Invalid value for argument `object_masks`. Expected an array of "
            f"shape {(images.shape[0], *spatial)} (one mask per image, same "
            f"height and width). Received: object_masks of shape "
            f"{objects.shape} for images of shape {images.shape}"
        )
    objects = objects > 0
    _progress.check_verbose(verbose)
    terms = statistics.mask_terms(
        model, images, mask, batch_size, 0 if grad_cam else verbose, "images"
    )
    scores = {
        "keep": localization_scores(terms["keep"], objects),
        "kept": localization_scores(kept_map(terms["keep"], terms["norms"]), objects),
    }
    if grad_cam:
        cam = gradients.grad_cam(
            model, images, layer=mask, batch_size=batch_size, verbose=verbose
        )
        scores["grad_cam"] = localization_scores(normalise_peak(cam), objects)
    return LocalizationResult(scores, objects.mean(), len(images), mask.name)
