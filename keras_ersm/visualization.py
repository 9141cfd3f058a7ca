"""Matplotlib figures: deletion curves, occlusion bars, keep-map overlays.

Every function builds a `matplotlib.figure.Figure` directly (no `pyplot`),
so it works headless with the Agg canvas and leaves pyplot's global state
alone. Save a figure with `figure.savefig(path)`.

Each deletion order (and the map it ranks tokens by) has one colour in
every figure, `ORDER_COLORS`: the energy order and the keep map share one,
Grad-CAM has its own in the deletion curves and the localization bars.
"""

import re

import numpy as np

# One colour per deletion order / map, the same in every figure.
ORDER_COLORS = {
    "energy": "#1f77b4",  # blue; also the keep map
    "keep": "#1f77b4",
    "kept": "#9467bd",  # purple: keep x token norm, order and map
    "magnitude": "#ff7f0e",  # orange
    "random": "#7f7f7f",  # gray
    "grad_cam": "#2ca02c",  # green
}
ORDER_LABELS = {
    "energy": "energy (ERSM score)",
    "keep": "ERSM keep map",
    "kept": "keep × token norm",
    "magnitude": "feature magnitude",
    "random": "random",
    "grad_cam": "Grad-CAM",
}
_METRIC_LABELS = {
    "mass_inside": "mass inside\nthe object",
    "pointing_game": "pointing game\n(peak on object)",
    "iou": "IoU of map > 0.5\nwith the object",
}


def _figure(ax, size=(5, 3.5)):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot(1, 1, 1)


def occlusion_label(setting):
    """Readable name of an occlusion setting of `occlusion_robustness`.

    Args:
        setting: a setting name such as `"cutout_4px_10pct"`,
            `"hide_and_seek_8px_p50"`, `"object"`, `"background"` or
            `"clean"`.

    Returns:
        A short description in words; unknown names come back unchanged.

    Examples:

    ```python
    from keras_ersm import visualization
    assert visualization.occlusion_label("cutout_4px_10pct") == (
        "Cutout 4x4 px squares, 10% of the image")
    ```
    """
    match = re.fullmatch(r"cutout_(\d+)px_(\d+)pct", setting)
    if match:
        return f"Cutout {match[1]}x{match[1]} px squares, {match[2]}% of the image"
    match = re.fullmatch(r"hide_and_seek_(\d+)px_p(\d+)", setting)
    if match:
        return f"Hide-and-Seek {match[1]} px cells, each hidden p={match[2]}%"
    return {
        "clean": "clean (nothing hidden)",
        "object": "object hidden",
        "background": "background hidden (object kept)",
    }.get(setting, setting)


def plot_deletion_curves(result, ax=None, title=None):
    """Plots a deletion curve: accuracy (%) against deleted fraction.

    Args:
        result: a `DeletionCurveResult` (or its `to_dict()`).
        ax: optional matplotlib Axes. Defaults to `None` (a new Figure).
        title: axes title, or `None` for one that names the direction.
            Defaults to `None`.

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
    direction = data.get("direction", "lerf")
    for order, accuracy in data["accuracy"].items():
        auc = data.get("auc", {}).get(order)
        label = ORDER_LABELS.get(order, order)
        if auc is not None:
            label = f"{label}, AUC {auc:.1f}"
        ax.plot(data["fractions"], accuracy, label=label, color=ORDER_COLORS.get(order))
    first = "least" if direction == "lerf" else "most"
    ax.set_xlabel(f"fraction of tokens deleted ({first} relevant first)")
    ax.set_ylabel("accuracy (%)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 100)
    if title is None:
        title = f"Deletion curves ({direction.upper()})"
    ax.set_title(title)
    ax.legend(
        loc="best",  # the emptiest corner: covers no curve where it can
        fontsize="small",
        title="deletion order",
        title_fontsize="small",
    )
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
    return figure


def plot_occlusion(results, title="Accuracy under occlusion", ax=None):
    """Grouped horizontal bars: accuracy per occlusion setting and model.

    Args:
        results: dict, model name -> `OcclusionResult` (or its `to_dict()`);
            one `OcclusionResult` is also accepted.
        title: axes title. Defaults to `"Accuracy under occlusion"`.
        ax: optional matplotlib Axes. Defaults to `None` (a new Figure).

    Returns:
        The matplotlib `Figure`: settings in words (`occlusion_label`),
        clean first; the legend sits right of the bars, outside the axes.

    Examples:

    ```python
    from keras_ersm import visualization
    figure = visualization.plot_occlusion({
        "ERSM": {"clean_accuracy": 90.0, "accuracy": {"object": 40.0}},
        "baseline": {"clean_accuracy": 88.0, "accuracy": {"object": 35.0}},
    })
    ```
    """
    if not isinstance(results, dict) or "accuracy" in results:
        results = {"": results}
    values = {}
    for name, result in results.items():
        data = result if isinstance(result, dict) else result.to_dict()
        values[name] = {"clean": data["clean_accuracy"], **data["accuracy"]}
    settings = list(next(iter(values.values())))
    for model_values in values.values():
        settings += [s for s in model_values if s not in settings]
    count = len(values)
    figure, ax = _figure(ax, size=(7.5, 0.42 * len(settings) * max(count, 1) / 2 + 2))
    rows = np.arange(len(settings))
    height = 0.8 / count
    for j, (name, model_values) in enumerate(values.items()):
        ax.barh(
            rows - 0.4 + height * (j + 0.5),
            [model_values.get(s, np.nan) for s in settings],
            height,
            label=name or None,
        )
    ax.set_yticks(rows)
    ax.set_yticklabels([occlusion_label(s) for s in settings], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(title)
    if count > 1 or next(iter(values)):
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize="small",
            frameon=False,
            borderaxespad=0.0,
        )
    return figure


def plot_mask_histogram(result, title="Mean keep per image", ax=None):
    """Histogram of the per-image mean keep of a `MaskStatisticsResult`.

    Args:
        result: a `MaskStatisticsResult`.
        title: axes title; the mean keep and active fraction are added
            below it. Defaults to `"Mean keep per image"`.
        ax: optional matplotlib Axes. Defaults to `None` (a new Figure).

    Returns:
        The matplotlib `Figure`.

    Examples:

    ```python
    import numpy as np
    from keras_ersm import visualization
    from keras_ersm.evaluation import MaskStatisticsResult
    result = MaskStatisticsResult(
        {"mean_keep": 0.5, "active_fraction": 0.5}, np.array([0.4, 0.6]),
        "mask")
    figure = visualization.plot_mask_histogram(result)
    ```
    """
    figure, ax = _figure(ax)
    ax.hist(
        result.per_image_mean, bins=20, range=(0.0, 1.0), color=ORDER_COLORS["keep"]
    )
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean keep of an image (0: all dropped, 1: all kept)")
    ax.set_ylabel("number of images")
    values = result.values
    details = []
    if "mean_keep" in values:
        details.append(f"mean keep {values['mean_keep']:.2f}")
    if "active_fraction" in values:
        details.append(
            f"{100 * values['active_fraction']:.0f}% of positions kept > 0.5"
        )
    ax.set_title(title + ("\n" + ", ".join(details) if details else ""))
    return figure


def plot_localization(result, title="Does the map land on the object?", ax=None):
    """Grouped bars of a `LocalizationResult`: each metric for each map.

    Args:
        result: a `LocalizationResult` (or its `to_dict()`).
        title: axes title. Defaults to `"Does the map land on the object?"`.
        ax: optional matplotlib Axes. Defaults to `None` (a new Figure).

    Returns:
        The matplotlib `Figure`, with a dashed line over the mass-inside
        bars at the object's share of the image (what a uniform map scores
        there), named in the legend.

    Examples:

    ```python
    from keras_ersm import visualization
    figure = visualization.plot_localization({
        "scores": {"keep": {"mass_inside": 0.6, "pointing_game": 0.9,
                            "iou": 0.4}},
        "object_fraction": 0.2,
    })
    ```
    """
    data = result if isinstance(result, dict) else result.to_dict()
    scores = data["scores"]
    metrics = list(_METRIC_LABELS)
    figure, ax = _figure(ax, size=(6, 3.8))
    width = 0.8 / max(len(scores), 1)
    for j, (name, values) in enumerate(scores.items()):
        xs = np.arange(len(metrics)) - 0.4 + width * (j + 0.5)
        ax.bar(
            xs,
            [values[m] for m in metrics],
            width,
            label=ORDER_LABELS.get(name, name),
            color=ORDER_COLORS.get(name),
        )
    # Only over the mass-inside bars: what a uniform map scores there.
    ax.hlines(
        data["object_fraction"],
        -0.45,
        0.45,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"uniform map (object covers {data['object_fraction']:.0%})",
    )
    ax.set_xticks(np.arange(len(metrics)))
    ax.set_xticklabels([_METRIC_LABELS[m] for m in metrics], fontsize="small")
    ax.set_ylim(0, 1.3)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("score (higher is better)")
    ax.set_title(title)
    ax.legend(loc="upper center", ncols=2, fontsize="small")
    return figure


def _display_image(image, data_format):
    image = np.asarray(image, dtype="float32")
    if data_format == "channels_first":
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def overlay_keep(
    images,
    keep,
    data_format="channels_last",
    max_images=8,
    alpha=0.5,
    title=None,
    map_label="keep",
):
    """Figure of keep maps (or any heat maps) overlaid on images.

    Each map is stretched over its image (nearest neighbour), drawn with the
    `"jet"` colormap in [0, 1] above the min-max normalised image. The top
    row shows the images, the bottom row the overlays with each map's mean
    under it; a colorbar on the right gives the scale.

    Args:
        images: array `(B, H, W, C)` (or `(B, C, H, W)` with
            `data_format="channels_first"`) or `(B, H, W)`.
        keep: array `(B, gh, gw)` of values in [0, 1].
        data_format: layout of `images`. Defaults to `"channels_last"`.
        max_images: at most this many images are drawn. Defaults to `8`.
        alpha: opacity of the map. Defaults to `0.5`.
        title: figure title, or `None` for none. Defaults to `None`.
        map_label: name of the map, for the row label and the colorbar.
            Defaults to `"keep"`.

    Returns:
        The matplotlib `Figure`, one column per image (image above,
        overlay below).

    Examples:

    ```python
    import numpy as np
    from keras_ersm import visualization
    figure = visualization.overlay_keep(
        np.random.rand(2, 16, 16, 3), np.random.rand(2, 4, 4),
        title="Keep maps")
    figure.savefig("overlay.png")
    ```
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = np.asarray(images)
    keep = np.asarray(keep, dtype="float32")
    count = min(len(images), len(keep), max_images)
    figure = Figure(
        figsize=(1.5 * max(count, 1) + 1.6, 3.6 + (0.35 if title else 0.0)),
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, max(count, 1), squeeze=False)
    mappable = None
    for i in range(count):
        image = _display_image(images[i], data_format)
        height, width = image.shape[:2]
        top, bottom = axes[0, i], axes[1, i]
        cmap = "gray" if image.ndim == 2 else None
        for ax in (top, bottom):
            ax.imshow(image, cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
        mappable = bottom.imshow(
            keep[i],
            cmap="jet",
            vmin=0.0,
            vmax=1.0,
            alpha=alpha,
            interpolation="nearest",
            extent=(-0.5, width - 0.5, height - 0.5, -0.5),
        )
        bottom.set_xlabel(f"mean {keep[i].mean():.2f}", fontsize="small")
    if count:
        axes[0, 0].set_ylabel("image")
        axes[1, 0].set_ylabel(f"{map_label} map")
        colorbar = figure.colorbar(
            mappable, ax=axes[:, -1].tolist(), shrink=0.9, aspect=25
        )
        colorbar.solids.set_alpha(1.0)
        colorbar.set_label(f"{map_label} (0: dropped, 1: kept)")
    if title:
        figure.suptitle(title)
    return figure


def figure_to_rgb(figure, dpi=80):
    """Renders a Figure to a `(H, W, 3)` uint8 RGB array (for TensorBoard).

    Args:
        figure: a matplotlib `Figure` with an Agg canvas (as every function
            here returns).
        dpi: resolution. Defaults to `80`.

    Returns:
        A `uint8` numpy array `(H, W, 3)`.

    Examples:

    ```python
    import numpy as np
    from keras_ersm import visualization
    figure = visualization.plot_bars({"clean": 90.0})
    assert visualization.figure_to_rgb(figure).shape[-1] == 3
    ```
    """
    figure.set_dpi(dpi)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
