"""`make_cluttered`: the bundled synthetic benchmark with ground-truth masks.

One glyph (a 5x7 bitmap of a digit or a letter, one glyph per class) is
drawn per image at a random position, size and colour on a textured,
cluttered background, above fragments of other glyphs (distractors). The
object mask marks the pixels of the glyph. A spurious cue, the hue of the
background, can be tied to the label in the training split only, to test
whether a model relies on the background.

Everything is vectorised NumPy driven by one `numpy.random.Generator`, so a
call is deterministic given its arguments.
"""

import numpy as np

from keras_ersm import _validation

_GLYPH_ROWS = {
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
}

GLYPHS = tuple(_GLYPH_ROWS)
"""The glyph drawn for each class, in class order (class `i` is `GLYPHS[i]`)."""
_BITMAPS = np.array(
    [[[c == "#" for c in row] for row in _GLYPH_ROWS[g]] for g in GLYPHS],
    dtype=bool,
)  # (num_glyphs, 7, 5)
_GLYPH_H, _GLYPH_W = _BITMAPS.shape[1:]
_FRAGMENT = 3  # distractors are 3x3-cell windows of a glyph
_SPLITS = ("train", "test")
_MAX_SEED = 2**63 - 1


_invalid = _validation.invalid
_is_int = _validation.is_int
_is_number = _validation.is_number


def _check_fraction(name, value):
    return _validation.check_number(name, value, minimum=0.0, maximum=1.0)


def _check_image_size(image_size):
    if _is_int(image_size):
        size = (int(image_size), int(image_size))
    elif (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(_is_int(s) for s in image_size)
    ):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        size = None
    if size is None or min(size) < 16:
        raise _invalid(
            "image_size",
            "an integer >= 16 or a (height, width) pair of them",
            image_size,
        )
    return size


def _check_object_scale(object_scale):
    if _is_number(object_scale):
        low = high = float(object_scale)
    elif (
        isinstance(object_scale, (tuple, list))
        and len(object_scale) == 2
        and all(_is_number(s) for s in object_scale)
    ):
        low, high = (float(s) for s in object_scale)
    else:
        low = high = -1.0
    if not 0.25 <= low <= high <= 1.0:
        raise _invalid(
            "object_scale",
            "a number in [0.25, 1] or a (min, max) pair with "
            "0.25 <= min <= max <= 1 (the glyph height as a fraction of the "
            "image height)",
            object_scale,
        )
    return low, high


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB; inputs of equal shape in [0, 1], output (..., 3)."""
    h6 = (h % 1.0) * 6.0
    i = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    table = np.stack(
        [
            np.stack([v, t, p], -1),
            np.stack([q, v, p], -1),
            np.stack([p, v, t], -1),
            np.stack([p, q, v], -1),
            np.stack([t, p, v], -1),
            np.stack([v, p, q], -1),
        ],
        axis=-2,
    )  # (..., 6, 3)
    return np.take_along_axis(table, i[..., None, None], axis=-2)[..., 0, :]


def _upsample(small, height, width):
    """Bilinear upsampling of (N, h, w, C) to (N, height, width, C)."""

    def matrix(src, dst):
        pos = (np.arange(dst) + 0.5) * src / dst - 0.5
        pos = np.clip(pos, 0, src - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, src - 1)
        frac = (pos - lo).astype(np.float32)
        m = np.zeros((dst, src), np.float32)
        np.add.at(m, (np.arange(dst), lo), 1.0 - frac)
        np.add.at(m, (np.arange(dst), hi), frac)
        return m

    rows, cols = matrix(small.shape[1], height), matrix(small.shape[2], width)
    out = np.einsum("yi,nijc->nyjc", rows, small, optimize=True)
    return np.einsum("xj,nyjc->nyxc", cols, out, optimize=True)


def _draw(height, width, glyphs, cell_y, cell_x, top, left, rows, cols, row0, col0):
    """Renders `rows x cols` cell windows of glyph bitmaps into (n, H, W) bool.

    Image `k` shows the window of glyph `glyphs[k]` starting at cell
    `(row0[k], col0[k])`, its top left corner at pixel `(top[k], left[k])`,
    with cells of `cell_y[k] x cell_x[k]` pixels.
    """
    ys = np.arange(height, dtype=np.float32)[None, :, None]
    xs = np.arange(width, dtype=np.float32)[None, None, :]
    gy = (ys - top[:, None, None]) / cell_y[:, None, None]
    gx = (xs - left[:, None, None]) / cell_x[:, None, None]
    inside = (gy >= 0) & (gy < rows) & (gx >= 0) & (gx < cols)
    iy = np.clip(np.floor(gy).astype(np.int64), 0, rows - 1) + row0[:, None, None]
    ix = np.clip(np.floor(gx).astype(np.int64), 0, cols - 1) + col0[:, None, None]
    iy, ix = np.broadcast_arrays(iy, ix)
    return inside & _BITMAPS[glyphs[:, None, None], iy, ix]


def _paint(images, pixels, colours):
    """Sets `images[k]` to `colours[k]` where `pixels[k]`, in place."""
    index = np.nonzero(pixels)
    images[index] = colours[index[0]]


def _glyph_colours(rng, n):
    hue = rng.random(n, dtype=np.float32)
    sat = rng.uniform(0.4, 1.0, n).astype(np.float32)
    val = rng.uniform(0.7, 1.0, n).astype(np.float32)
    return _hsv_to_rgb(hue, sat, val)  # (n, 3)


def make_cluttered(
    num_images,
    image_size=32,
    num_classes=10,
    clutter=0.5,
    distractors=4,
    spurious_cue=0.0,
    object_scale=(0.5, 0.85),
    split="train",
    seed=0,
):
    """Generates the cluttered-glyphs benchmark: images, labels, object masks.

    Each image holds one object: the 5x7 bitmap glyph of its class (the
    digits `0`-`9`, then the letters of `GLYPHS` for more than ten classes),
    drawn at a random position and size, in a random bright colour, with
    strokes about one glyph cell wide. Below it lie `distractors` fragments
    of random glyphs (3x3-cell windows, same colours and sizes as objects),
    so local strokes do not give the class away and the model has to find
    the whole shape. The background is a dark, random hue whose brightness
    varies with a smooth random texture and random bright speckles, both of
    strength `clutter`.

    The spurious cue ties the background hue to the label: with probability
    `spurious_cue` an image of class `c` in the `"train"` split gets the hue
    `c / num_classes` (otherwise a uniformly random hue). The `"test"` split
    always draws a random hue, so a model that learned the cue loses
    accuracy there.

    The result depends only on the arguments: the same call gives the same
    arrays, and the `"train"` and `"test"` splits of one `seed` are drawn
    from different random streams.

    Args:
        num_images: int >= 1, number of images.
        image_size: int >= 16 or `(height, width)`. Defaults to `32`.
        num_classes: int in `[2, len(GLYPHS)]` (20). Labels are balanced
            up to one image. Defaults to `10`.
        clutter: float in `[0, 1]`, strength of the background texture and
            density of the speckles; `0` gives a flat background. Defaults
            to `0.5`.
        distractors: int >= 0, number of glyph fragments per image.
            Defaults to `4`.
        spurious_cue: float in `[0, 1]`, probability that a training image's
            background hue is its class hue. Ignored for `split="test"`.
            Defaults to `0.0`.
        object_scale: float or `(min, max)` in `[0.25, 1]`: glyph height as
            a fraction of the image height, drawn uniformly per image.
            Defaults to `(0.5, 0.85)`.
        split: `"train"` or `"test"`. Defaults to `"train"`.
        seed: int >= 0. Defaults to `0`.

    Returns:
        Tuple `(images, labels, object_masks)`: `images` float32 of shape
        `(num_images, height, width, 3)` in `[0, 1]`, `labels` int32 of
        shape `(num_images,)`, `object_masks` float32 of shape
        `(num_images, height, width)`, `1.0` on the object's pixels and
        `0.0` elsewhere; every image has at least one object pixel.

    Examples:

    ```python
    import keras_ersm

    x, y, masks = keras_ersm.datasets.make_cluttered(64, seed=1)
    assert x.shape == (64, 32, 32, 3) and y.shape == (64,)
    assert masks.shape == (64, 32, 32)
    # A training set with a background shortcut, and a test set without it.
    x_train, y_train, _ = keras_ersm.datasets.make_cluttered(
        64, spurious_cue=0.9, split="train"
    )
    x_test, y_test, _ = keras_ersm.datasets.make_cluttered(
        64, spurious_cue=0.9, split="test"
    )
    ```
    """
    _validation.check_int("num_images", num_images, 1)
    height, width = _check_image_size(image_size)
    _validation.check_int("num_classes", num_classes, 2, len(GLYPHS))
    clutter = _check_fraction("clutter", clutter)
    _validation.check_int("distractors", distractors, 0)
    spurious_cue = _check_fraction("spurious_cue", spurious_cue)
    scale_low, scale_high = _check_object_scale(object_scale)
    _validation.check_choice("split", split, _SPLITS)
    _validation.check_int("seed", seed, 0, _MAX_SEED, expected="a non-negative integer")

    n = int(num_images)
    rng = np.random.default_rng([int(seed), _SPLITS.index(split)])

    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int32)

    # Background: a dark hue, a smooth brightness texture and speckles.
    hue = rng.random(n, dtype=np.float32)
    if split == "train" and spurious_cue > 0:
        cued = rng.random(n) < spurious_cue
        hue = np.where(cued, labels / np.float32(num_classes), hue)
    base = _hsv_to_rgb(
        hue.astype(np.float32),
        rng.uniform(0.5, 0.9, n).astype(np.float32),
        rng.uniform(0.25, 0.45, n).astype(np.float32),
    )
    coarse = rng.random((n, 5, 5, 1), dtype=np.float32)
    texture = _upsample(coarse, height, width) - 0.5  # (n, H, W, 1)
    fine = rng.random((n, height, width, 1), dtype=np.float32) - 0.5
    shade = texture
    shade *= 1.2 * clutter
    fine *= 0.6 * clutter
    shade += fine
    shade += 1.0
    images = base[:, None, None, :] * shade
    speckles = rng.random((n, height, width), dtype=np.float32) < 0.08 * clutter
    images[speckles] = rng.random((int(speckles.sum()), 3), dtype=np.float32)

    def cell_sizes():
        scale = rng.uniform(scale_low, scale_high, n).astype(np.float32)
        return scale * height / _GLYPH_H

    # Distractors: 3x3-cell windows of random glyphs, drawn below the object.
    for _ in range(distractors):
        cell = cell_sizes()
        span = cell * _FRAGMENT
        top = rng.random(n, dtype=np.float32) * (height - span)
        left = rng.random(n, dtype=np.float32) * (width - span)
        glyphs = rng.integers(0, len(GLYPHS), n)
        row0 = rng.integers(0, _GLYPH_H - _FRAGMENT + 1, n)
        col0 = rng.integers(0, _GLYPH_W - _FRAGMENT + 1, n)
        pixels = _draw(
            height,
            width,
            glyphs,
            cell,
            cell,
            top,
            left,
            _FRAGMENT,
            _FRAGMENT,
            row0,
            col0,
        )
        _paint(images, pixels, _glyph_colours(rng, n))

    # The object.
    cell = cell_sizes()
    cell_x = np.minimum(
        cell * rng.uniform(0.8, 1.2, n).astype(np.float32), width / _GLYPH_W
    )
    top = rng.random(n, dtype=np.float32) * (height - cell * _GLYPH_H)
    left = rng.random(n, dtype=np.float32) * (width - cell_x * _GLYPH_W)
    zeros = np.zeros(n, np.int64)
    masks = _draw(
        height,
        width,
        labels,
        cell,
        cell_x,
        top,
        left,
        _GLYPH_H,
        _GLYPH_W,
        zeros,
        zeros,
    )
    # Glyph cells smaller than a pixel (small images, small object_scale)
    # can fall between the pixel samples: keep at least the pixel under the
    # centre of one of the glyph's cells, so every image shows its object.
    for k in np.flatnonzero(~masks.any(axis=(1, 2))):
        on = np.argwhere(_BITMAPS[labels[k]])
        row, col = on[len(on) // 2]
        y = min(int(top[k] + (row + 0.5) * cell[k]), height - 1)
        x = min(int(left[k] + (col + 0.5) * cell_x[k]), width - 1)
        masks[k, y, x] = True
    _paint(images, masks, _glyph_colours(rng, n))

    np.clip(images, 0.0, 1.0, out=images)
    return images, labels, masks.astype(np.float32)
