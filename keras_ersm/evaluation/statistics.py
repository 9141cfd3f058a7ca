"""Statistics of the keep maps of an EnergyMask layer."""

import numpy as np

from keras_ersm.evaluation import _data, _graph
from keras_ersm.models import inspection


class MaskStatisticsResult:
    """Summary of the keep maps of one `EnergyMask` layer over a dataset.

    Attributes:
        values: dict with `"mean_keep"` (mean keep over images and tokens),
            `"active_fraction"` (fraction of tokens with keep > 0.5),
            `"entropy"` (entropy of each image's keep map normalised to sum
            to 1, divided by `log N`, so 1 is a uniform mask and 0 keeps one
            token; averaged over images), `"spread"` (standard deviation
            across images of the per-image mean keep), `"mean_keep_min"` and
            `"mean_keep_max"` (extremes of the per-image mean keep).
        per_image_mean: numpy array of the per-image mean keep.
        layer: name of the layer.

    Examples:

    ```python
    import numpy as np
    from keras_ersm.evaluation import MaskStatisticsResult
    result = MaskStatisticsResult(
        {"mean_keep": 0.5, "active_fraction": 0.5}, np.array([0.4, 0.6]),
        "mask")
    assert result["mean_keep"] == 0.5
    ```
    """

    def __init__(self, values, per_image_mean, layer):
        self.values = {k: float(v) for k, v in values.items()}
        self.per_image_mean = np.asarray(per_image_mean, dtype="float64")
        self.layer = layer

    def __getitem__(self, key):
        return self.values[key]

    def to_dict(self):
        """Returns the result as a JSON-serializable dict."""
        return {"layer": self.layer, **self.values}

    def plot(self, ax=None):
        """Histogram of the per-image mean keep, drawn into the matplotlib
        Axes `ax` (a new Figure for `None`); returns the `Figure`."""
        from keras_ersm import visualization

        return visualization.plot_mask_histogram(self, ax=ax)

    def __repr__(self):
        values = ", ".join(f"{k}={v:.4f}" for k, v in self.values.items())
        return f"MaskStatisticsResult(layer={self.layer!r}, {values})"


def keep_statistics(keep):
    """Statistics of a `(B, gh, gw)` keep array, see `MaskStatisticsResult`."""
    keep = np.asarray(keep, dtype="float64").reshape(len(keep), -1)
    n = keep.shape[1]
    per_image = keep.mean(axis=1)
    probs = keep / np.maximum(keep.sum(axis=1, keepdims=True), 1e-12)
    entropy = -np.sum(
        np.where(probs > 0, probs * np.log(np.maximum(probs, 1e-300)), 0), 1
    )
    entropy = entropy / np.log(n) if n > 1 else np.zeros_like(entropy)
    values = {
        "mean_keep": keep.mean(),
        "active_fraction": (keep > 0.5).mean(),
        "entropy": entropy.mean(),
        "spread": per_image.std(),
        "mean_keep_min": per_image.min(),
        "mean_keep_max": per_image.max(),
    }
    return values, per_image


def mask_keep_maps(model, data, layer=None, batch_size=32, verbose=0, argument="data"):
    """`(mask layer, keep maps)` of the layer `resolve_mask_layer` picks.

    Validates as the evaluation functions do, then reads the keep maps as
    `keras_ersm.models.keep_maps` does (the package's one keep-map reader),
    with data errors naming `argument`, the caller's parameter.
    """
    mask = _graph.resolve_mask_layer(model, layer)
    return mask, mask_terms(model, data, mask, batch_size, verbose, argument)["keep"]


def mask_terms(model, data, mask, batch_size=32, verbose=0, argument="data"):
    """`keras_ersm.models.energy_terms` of the `EnergyMask` `mask`, with
    data errors naming `argument`, the caller's parameter."""
    _data.check_batch_size(batch_size)
    terms = inspection._read_terms(model, data, mask, batch_size, verbose, argument)
    return terms[mask.name]


def mask_statistics(model, data, layer=None, batch_size=32, verbose=0):
    """Statistics of an EnergyMask layer's keep maps over a dataset.

    Runs only the part of the model up to the layer. Labels are not needed.

    Args:
        model: a Functional or Sequential Keras model with an `EnergyMask`.
        data: images (an array), `(x, y)` arrays, a `tf.data.Dataset`, an
            iterable of batches or a `keras.utils.PyDataset`.
        layer: name or instance of the `EnergyMask` layer, or `None` for the
            model's last one. Defaults to `None`.
        batch_size: images per forward pass (arrays only). Defaults to `32`.
        verbose: `0` (silent), `1` or `"auto"` (a `keras.utils.Progbar`
            per batch, as `model.evaluate` shows) or `2` (one line at the
            end). Defaults to `0`.

    Returns:
        A `MaskStatisticsResult`; `result.values` holds `mean_keep`,
        `active_fraction`, `entropy`, `spread`, `mean_keep_min`,
        `mean_keep_max`.

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
    stats = keras_ersm.evaluation.mask_statistics(
        model, np.random.rand(4, 8, 8, 3).astype("float32"))
    assert 0.0 <= stats["active_fraction"] <= 1.0
    ```
    """
    mask, keep = mask_keep_maps(model, data, layer, batch_size, verbose)
    values, per_image = keep_statistics(keep)
    return MaskStatisticsResult(values, per_image, mask.name)
