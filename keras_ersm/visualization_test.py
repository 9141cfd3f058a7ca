import numpy as np

from keras_ersm import visualization


def test_figures_render_headless(tmp_path):
    images = np.random.default_rng(0).random((3, 16, 16, 3))
    figure = visualization.overlay_keep(images, np.random.rand(3, 4, 4), max_images=2)
    path = tmp_path / "overlay.png"
    figure.savefig(path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert len(figure.axes) == 4
    gray = visualization.overlay_keep(
        np.random.rand(2, 1, 8, 8),
        np.random.rand(2, 2, 2),
        data_format="channels_first",
    )
    assert len(gray.axes) == 4
    curves = visualization.plot_deletion_curves(
        {"fractions": [0, 1], "accuracy": {"energy": [90, 10], "random": [90, 5]}}
    )
    assert len(curves.axes[0].lines) == 2
    bars = visualization.plot_bars({"clean": 1.0, "cutout": 0.5})
    assert len(bars.axes[0].patches) == 2
