import time

import numpy as np
import pytest

from keras_ersm import datasets
from keras_ersm.datasets import cluttered
from keras_ersm.datasets.cluttered import GLYPHS, make_cluttered


def _background_hue(images, masks):
    """Hue in [0, 1) of each image's median background colour."""
    background = np.where(masks[..., None] > 0, np.nan, images)
    rgb = np.nanmedian(background.reshape(len(images), -1, 3), axis=1)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    hi, lo = rgb.max(1), rgb.min(1)
    d = np.maximum(hi - lo, 1e-6)
    hue = np.where(
        hi == r, ((g - b) / d) % 6, np.where(hi == g, (b - r) / d + 2, (r - g) / d + 4)
    )
    return hue / 6.0


def _cue_accuracy(images, labels, masks, num_classes):
    hue = _background_hue(images, masks)
    # Distance on the circle to each class hue c / num_classes.
    class_hue = np.arange(num_classes) / num_classes
    dist = np.abs(hue[:, None] - class_hue[None, :])
    dist = np.minimum(dist, 1 - dist)
    return float(np.mean(np.argmin(dist, axis=1) == labels))


def test_exported():
    assert datasets.make_cluttered is make_cluttered
    assert "make_cluttered" in datasets.__all__
    assert GLYPHS[:10] == tuple("0123456789")


def test_shapes_dtypes_and_ranges():
    x, y, m = make_cluttered(40, image_size=(24, 40), num_classes=7, seed=3)
    assert x.shape == (40, 24, 40, 3) and x.dtype == np.float32
    assert y.shape == (40,) and y.dtype == np.int32
    assert m.shape == (40, 24, 40) and m.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert set(np.unique(m)) <= {0.0, 1.0}
    # Balanced labels covering every class.
    assert np.bincount(y, minlength=7).tolist() == [6, 6, 6, 6, 6, 5, 5]


def test_deterministic_and_seeded():
    a = make_cluttered(16, seed=5)
    b = make_cluttered(16, seed=5)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    c = make_cluttered(16, seed=6)
    assert not np.array_equal(a[0], c[0])
    test = make_cluttered(16, seed=5, split="test")
    assert not np.array_equal(a[0], test[0])


def test_masks_cover_the_object():
    x, y, m = make_cluttered(64, clutter=0.0, distractors=0, seed=1)
    area = m.reshape(64, -1).sum(1)
    # Every object is visible and large enough to recognise.
    assert area.min() >= 20
    # The object is drawn on top: all its pixels share one colour.
    for k in range(8):
        pixels = x[k][m[k] > 0]
        np.testing.assert_allclose(pixels, np.broadcast_to(pixels[0], pixels.shape))
    # Without clutter or distractors, everything off the mask is background,
    # darker than the object.
    bright = x.max(-1)
    assert np.all(bright[m > 0].reshape(-1) >= 0.69)
    assert np.all(bright[m == 0] <= 0.46)


def test_object_shape_matches_label():
    # Masks of one class look alike: compare each mask, resized to the glyph
    # grid around its bounding box, with the class bitmap.
    x, y, m = make_cluttered(50, num_classes=5, distractors=0, seed=2)
    bitmaps = cluttered._BITMAPS
    for k in range(50):
        rows = np.nonzero(m[k].any(1))[0]
        cols = np.nonzero(m[k].any(0))[0]
        box = m[k][rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        ry = (np.arange(7) + 0.5) * box.shape[0] / 7
        rx = (np.arange(5) + 0.5) * box.shape[1] / 5
        small = box[ry.astype(int)][:, rx.astype(int)] > 0
        scores = [np.mean(small == b) for b in bitmaps[:5]]
        assert int(np.argmax(scores)) == y[k]


def test_clutter_and_distractors_change_the_background():
    flat = make_cluttered(32, clutter=0.0, distractors=0, seed=4)
    busy = make_cluttered(32, clutter=1.0, distractors=6, seed=4)

    def background_spread(images, masks):
        values = images.max(-1)
        return float(
            np.mean([v[mk == 0].std() for v, mk in zip(values, masks, strict=True)])
        )

    assert background_spread(*flat[::2]) < 0.01
    assert background_spread(*busy[::2]) > 0.1


def test_spurious_cue_in_train_split_only():
    kwargs = dict(num_images=400, num_classes=8, spurious_cue=1.0, seed=0)
    x, y, m = make_cluttered(split="train", **kwargs)
    assert _cue_accuracy(x, y, m, 8) > 0.9
    x, y, m = make_cluttered(split="test", **kwargs)
    assert _cue_accuracy(x, y, m, 8) < 0.3
    x, y, m = make_cluttered(split="train", **{**kwargs, "spurious_cue": 0.0})
    assert _cue_accuracy(x, y, m, 8) < 0.3
    x, y, m = make_cluttered(split="train", **{**kwargs, "spurious_cue": 0.5})
    assert 0.4 < _cue_accuracy(x, y, m, 8) < 0.8


def test_speed():
    start = time.perf_counter()
    x, _, _ = make_cluttered(2000)
    # 10,000 images take about 2 s; 2,000 must stay far below a few seconds
    # even on a busy machine.
    assert time.perf_counter() - start < 10.0
    assert x.shape == (2000, 32, 32, 3)


# Wrong type -> TypeError, wrong value -> ValueError (keras_ersm._validation).
@pytest.mark.parametrize(
    "kwargs, name, error",
    [
        (dict(num_images=0), "num_images", ValueError),
        (dict(num_images=2.5), "num_images", TypeError),
        (dict(image_size=8), "image_size", ValueError),
        (dict(image_size=(32,)), "image_size", ValueError),
        (dict(num_classes=1), "num_classes", ValueError),
        (dict(num_classes=len(GLYPHS) + 1), "num_classes", ValueError),
        (dict(clutter=1.5), "clutter", ValueError),
        (dict(clutter="high"), "clutter", TypeError),
        (dict(clutter=float("nan")), "clutter", ValueError),
        (dict(distractors=-1), "distractors", ValueError),
        (dict(spurious_cue=-0.1), "spurious_cue", ValueError),
        (dict(object_scale=0.1), "object_scale", ValueError),
        (dict(object_scale=(0.9, 0.5)), "object_scale", ValueError),
        (dict(split="validation"), "split", ValueError),
        (dict(seed=-1), "seed", ValueError),
        (dict(seed=None), "seed", TypeError),
    ],
)
def test_bad_arguments(kwargs, name, error):
    args = {"num_images": 4, **kwargs}
    with pytest.raises(error, match=f"argument `{name}`.*Received: {name}="):
        make_cluttered(**args)


def test_small_objects_keep_at_least_one_pixel():
    # Cells smaller than a pixel used to leave some images without any
    # object pixel (issue 15 item 11).
    x, _, masks = make_cluttered(300, image_size=16, object_scale=0.25)
    assert masks.sum(axis=(1, 2)).min() >= 1
    assert masks.max() == 1.0 and x.shape == (300, 16, 16, 3)
