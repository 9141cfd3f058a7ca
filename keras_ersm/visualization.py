"""Matplotlib figures: deletion curves, occlusion bars, keep-map overlays.

Every function builds a `matplotlib.figure.Figure` directly (no `pyplot`),
so it works headless with the Agg canvas and leaves pyplot's global state
alone. Save a figure with `figure.savefig(path)`.
"""

import numpy as np


def _figure(ax, size=(5, 3.5)):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot(1, 1, 1)


def plot_deletion_curves(result, ax=None):
    """Plots a deletion curve: accuracy (%) against deleted fraction.

    Args:
        result: a `DeletionCurveResult` (or its `to_dict()`).
        ax: optional matplotlib Axes. Defaults to `None` (a new Figure).

    Returns:
        The matplotlib `Figure`.

    Examples:

    ```python
    from keras_ersm import visualization
    figure = visualization.plot_deletion_curves({
        "fractions": [0.0, 0.5, 1.0],
        "accuracy": {"energy": [90.0, 80.0, 10.0]},
        "auc": {"energy": 65.0},
        "direction": "lerf",
    })
    ```
    """
    data = result if isinstance(result, dict) else result.to_dict()
    figure, ax = _figure(ax)
    for order, accuracy in data["accuracy"].items():
        auc = data.get("auc", {}).get(order)
        label = order if auc is None else f"{order} (AUC {auc:.1f})"
        ax.plot(data["fractions"], accuracy, label=label)
    ax.set_xlabel(f"deleted fraction ({data.get('direction', 'lerf')})")
    ax.set_ylabel("accuracy (%)")
    ax.set_xlim(0, 1)
    ax.legend(loc="best", fontsize="small")
    return figure


def plot_bars(values, title="", ylabel="", ax=None):
    """Horizontal bar chart of a `name -> value` dict.

    Args:
        values: dict of name -> number.
        title: axes title. Defaults to `""`.
        ylabel: label of the value axis. Defaults to `""`.
        ax: optional matplotlib Axes. Defaults to `None` (a new Figure).

    Returns:
        The matplotlib `Figure`.

    Examples:

    ```python
    from keras_ersm import visualization
    figure = visualization.plot_bars({"clean": 90.0, "cutout": 70.0})
    ```
    """
    names = list(values)
    figure, ax = _figure(ax, size=(6, 0.35 * len(names) + 1.5))
    ax.barh(range(len(names)), [float(values[n]) for n in names])
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel(ylabel)
    ax.set_title(title)
    figure.tight_layout()
    return figure


def _display_image(image, data_format):
    image = np.asarray(image, dtype="float32")
    if data_format == "channels_first":
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def overlay_keep(images, keep, data_format="channels_last", max_images=8, alpha=0.5):
    """Figure of keep maps (or any heat maps) overlaid on images.

    Each map is stretched over its image (nearest neighbour), drawn with the
    `"jet"` colormap in [0, 1] above the min-max normalised image.

    Args:
        images: array `(B, H, W, C)` (or `(B, C, H, W)` with
            `data_format="channels_first"`) or `(B, H, W)`.
        keep: array `(B, gh, gw)` of values in [0, 1].
        data_format: layout of `images`. Defaults to `"channels_last"`.
        max_images: at most this many images are drawn. Defaults to `8`.
        alpha: opacity of the map. Defaults to `0.5`.

    Returns:
        The matplotlib `Figure`, one column per image (image above,
        overlay below).

    Examples:

    ```python
    import numpy as np
    from keras_ersm import visualization
    figure = visualization.overlay_keep(
        np.random.rand(2, 16, 16, 3), np.random.rand(2, 4, 4))
    figure.savefig("/tmp/overlay.png")
    ```
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = np.asarray(images)
    keep = np.asarray(keep, dtype="float32")
    count = min(len(images), len(keep), max_images)
    figure = Figure(figsize=(1.6 * max(count, 1), 3.4))
    FigureCanvasAgg(figure)
    for i in range(count):
        image = _display_image(images[i], data_format)
        height, width = image.shape[:2]
        top = figure.add_subplot(2, count, i + 1)
        bottom = figure.add_subplot(2, count, count + i + 1)
        cmap = "gray" if image.ndim == 2 else None
        for ax in (top, bottom):
            ax.imshow(image, cmap=cmap)
            ax.set_axis_off()
        bottom.imshow(
            keep[i],
            cmap="jet",
            vmin=0.0,
            vmax=1.0,
            alpha=alpha,
            interpolation="nearest",
            extent=(-0.5, width - 0.5, height - 0.5, -0.5),
        )
        bottom.set_title(f"mean {keep[i].mean():.2f}", fontsize="x-small")
    figure.tight_layout()
    return figure
