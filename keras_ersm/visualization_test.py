import numpy as np

from keras_ersm import visualization
from keras_ersm.evaluation import (
    LocalizationResult,
    MaskStatisticsResult,
    OcclusionResult,
)


def _legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_figures_render_headless(tmp_path):
    images = np.random.default_rng(0).random((3, 16, 16, 3))
    figure = visualization.overlay_keep(
        images, np.random.rand(3, 4, 4), max_images=2, title="Keep maps"
    )
    path = tmp_path / "overlay.png"
    figure.savefig(path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert len(figure.axes) == 5  # 2 x 2 images and a colorbar
    assert figure.get_suptitle() == "Keep maps"
    assert figure.axes[0].get_ylabel() == "image"
    assert figure.axes[2].get_xlabel().startswith("mean ")  # under the overlay
    gray = visualization.overlay_keep(
        np.random.rand(2, 1, 8, 8),
        np.random.rand(2, 2, 2),
        data_format="channels_first",
    )
    assert len(gray.axes) == 5
    curves = visualization.plot_deletion_curves(
        {"fractions": [0, 1], "accuracy": {"energy": [90, 10], "random": [90, 5]}}
    )
    assert len(curves.axes[0].lines) == 2
    assert curves.axes[0].get_title()
    bars = visualization.plot_bars({"clean": 1.0, "cutout": 0.5})
    assert len(bars.axes[0].patches) == 2
    rgb = visualization.figure_to_rgb(bars)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[-1] == 3


def test_one_colour_per_order_across_figures():
    curves = visualization.plot_deletion_curves(
        {
            "fractions": [0, 1],
            "accuracy": {"grad_cam": [90, 10], "energy": [90, 5]},
            "direction": "lerf",
        }
    )
    other = visualization.plot_deletion_curves(
        {"fractions": [0, 1], "accuracy": {"energy": [90, 5], "grad_cam": [90, 10]}}
    )
    colours = {
        line.get_label().split(",")[0]: line.get_color()
        for line in curves.axes[0].lines
    }
    assert colours == {
        line.get_label().split(",")[0]: line.get_color() for line in other.axes[0].lines
    }
    local = LocalizationResult(
        {
            "keep": {"mass_inside": 0.6, "pointing_game": 0.9, "iou": 0.4},
            "grad_cam": {"mass_inside": 0.5, "pointing_game": 0.8, "iou": 0.3},
        },
        object_fraction=0.2,
        num_images=4,
        layer="mask",
    ).plot()
    ax = local.axes[0]
    # Grad-CAM bars share the Grad-CAM curve's colour.
    cam_bar = ax.containers[1].patches[0]
    assert np.allclose(
        cam_bar.get_facecolor()[:3],
        np.array([int(colours["Grad-CAM"][i : i + 2], 16) for i in (1, 3, 5)]) / 255,
    )
    assert ax.get_title() and ax.get_ylabel()
    assert any("uniform map" in t for t in _legend_texts(ax))


def test_kept_has_its_own_colour_and_label():
    curves = visualization.plot_deletion_curves(
        {
            "fractions": [0, 1],
            "accuracy": {"energy": [90, 5], "kept": [90, 20], "magnitude": [90, 8]},
            "direction": "lerf",
        }
    )
    lines = {line.get_label().split(",")[0]: line for line in curves.axes[0].lines}
    assert "keep × token norm" in lines
    colours = [line.get_color() for line in lines.values()]
    assert len(set(colours)) == 3
    assert lines["keep × token norm"].get_color() == visualization.ORDER_COLORS["kept"]


def test_occlusion_and_histogram_read_without_the_code():
    assert visualization.occlusion_label("hide_and_seek_8px_p50") == (
        "Hide-and-Seek 8 px cells, each hidden p=50%"
    )
    assert visualization.occlusion_label("object") == "object hidden"
    result = OcclusionResult(
        90.0, {"cutout_4px_10pct": 80.0, "object": 40.0}, {}, "mean", 4
    )
    figure = visualization.plot_occlusion({"ERSM": result, "baseline": result})
    ax = figure.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "clean (nothing hidden)" and "cutout" not in labels[1]
    assert _legend_texts(ax) == ["ERSM", "baseline"]
    # The legend sits right of the axes, so it covers no bar nor the title.
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    legend_box = ax.get_legend().get_window_extent(renderer)
    assert legend_box.x0 >= ax.get_window_extent(renderer).x1 - 1
    assert len(result.plot().axes[0].patches) == 3
    stats = MaskStatisticsResult(
        {"mean_keep": 0.5, "active_fraction": 0.25}, np.array([0.4, 0.6]), "mask"
    )
    hist = stats.plot()
    assert "mask" not in hist.axes[0].get_title()  # no internal layer name
    assert "25%" in hist.axes[0].get_title()
