"""Deletion curves at an EnergyMask or any 4-D layer, with the steps batched."""

import keras
import numpy as np

from keras_ersm import _validation
from keras_ersm.evaluation import _data, _graph, _progress, gradients

ORDERS = ("energy", "kept", "magnitude", "random", "grad_cam")
# The orders that need an EnergyMask at the cut (its scores and keep).
MASK_ORDERS = ("energy", "kept")
DIRECTIONS = ("lerf", "morf")


class DeletionCurveResult:
    """Accuracy of a classifier as tokens are deleted at a layer.

    Attributes:
        fractions: numpy array, deleted fraction of the tokens per step, from
            0 to 1.
        accuracy: dict, order name -> numpy array of accuracies in % per step.
        auc: dict, order name -> trapezoid of the accuracy (%) over the
            deleted fraction in [0, 1] (so in [0, 100]).
        direction: `"lerf"` or `"morf"`.
        num_tokens: tokens per image `N` at the layer.
        num_images: images evaluated.
        layer: name of the layer cut at (an `EnergyMask` or a 4-D layer).
        replace_keep: whether the binary mask replaced the soft keep.

    Examples:

    ```python
    from keras_ersm.evaluation import DeletionCurveResult
    result = DeletionCurveResult(
        fractions=[0.0, 0.5, 1.0], accuracy={"energy": [90.0, 80.0, 10.0]},
        direction="lerf", num_tokens=2, num_images=10, layer="mask",
        replace_keep=False)
    assert result.auc["energy"] == 65.0
    figure = result.plot()
    ```
    """

    def __init__(
        self,
        fractions,
        accuracy,
        direction,
        num_tokens,
        num_images,
        layer,
        replace_keep,
    ):
        self.fractions = np.asarray(fractions, dtype="float64")
        self.accuracy = {k: np.asarray(v, dtype="float64") for k, v in accuracy.items()}
        self.direction = direction
        self.num_tokens = int(num_tokens)
        self.num_images = int(num_images)
        self.layer = layer
        self.replace_keep = bool(replace_keep)
        self.auc = {
            k: _data.trapezoid(v, self.fractions) for k, v in self.accuracy.items()
        }

    def to_dict(self):
        """Returns the result as a JSON-serializable dict."""
        return {
            "fractions": [float(f) for f in self.fractions],
            "accuracy": {k: [float(a) for a in v] for k, v in self.accuracy.items()},
            "auc": {k: float(v) for k, v in self.auc.items()},
            "direction": self.direction,
            "num_tokens": self.num_tokens,
            "num_images": self.num_images,
            "layer": self.layer,
            "replace_keep": self.replace_keep,
        }

    def plot(self, ax=None):
        """Plots accuracy against deleted fraction, one line per order.

        Args:
            ax: optional matplotlib Axes to draw into. Defaults to `None`
                (a new Figure).

        Returns:
            The matplotlib `Figure`.
        """
        from keras_ersm import visualization

        return visualization.plot_deletion_curves(self, ax=ax)

    def __repr__(self):
        aucs = ", ".join(f"{k}={v:.2f}" for k, v in self.auc.items())
        return (
            f"DeletionCurveResult(layer={self.layer!r}, "
            f"direction={self.direction!r}, steps={len(self.fractions)}, "
            f"auc: {aucs})"
        )


def check_orders(orders, cut):
    """The orders to run at `cut` (a `_graph.Cut`): all that apply for `None`."""
    if orders is None:
        if cut.is_mask:
            return ORDERS
        return tuple(o for o in ORDERS if o not in MASK_ORDERS)
    if isinstance(orders, str):
        orders = (orders,)
    try:
        orders = tuple(orders)
    except TypeError:
        raise _validation.invalid_type(
            "orders", f"a tuple of names among {ORDERS}", orders
        ) from None
    if (
        not orders
        or any(o not in ORDERS for o in orders)
        or len(set(orders)) != len(orders)
    ):
        raise _graph.invalid("orders", f"distinct names among {ORDERS}", orders)
    needs_mask = [o for o in MASK_ORDERS if o in orders]
    if needs_mask and not cut.is_mask:
        names = ", ".join(repr(o) for o in needs_mask)
        raise _graph.invalid(
            "orders",
            f"orders without {names} at layer {cut.name!r}, which is not an "
            "EnergyMask (it has no scores, and its keep is all ones)",
            orders,
        )
    return orders


def deletion_ks(num_tokens, steps):
    """Numbers of deleted tokens per step."""
    if steps is None:
        return np.arange(num_tokens + 1)
    steps = _validation.check_int("steps", steps, 2, expected="None or an integer >= 2")
    return np.unique(np.round(np.linspace(0, num_tokens, steps)).astype("int64"))


def deletion_positions(priority, direction):
    """Step at which each token is deleted: lowest priority first in "lerf".

    Args:
        priority: array `(B, N)`.
        direction: `"lerf"` (lowest priority deleted first) or `"morf"`
            (highest first).

    Returns:
        Int array `(B, N)`: token `i` of image `b` is deleted once
        `k > positions[b, i]` tokens are deleted.
    """
    key = priority if direction == "lerf" else -priority
    order = np.argsort(key, axis=1, kind="stable")
    positions = np.empty_like(order)
    rows = np.arange(order.shape[0])[:, None]
    positions[rows, order] = np.arange(order.shape[1])[None, :]
    return positions


def pool_to_tokens(cam, patch_size):
    """Averages a `(B, h, w)` map over `p x p` patches (zero padded)."""
    if patch_size == 1:
        return cam
    p = patch_size
    b, h, w = cam.shape
    cam = np.pad(cam, ((0, 0), (0, (-h) % p), (0, (-w) % p)))
    gh, gw = cam.shape[1] // p, cam.shape[2] // p
    return cam.reshape(b, gh, p, gw, p).mean(axis=(2, 4))


def _priorities(orders, scores, keep, norms, cam, rng):
    b = norms.shape[0]
    out = {}
    for order in orders:
        if order == "energy":
            # Highest score z = lowest keep logit: deleted first in "lerf".
            out[order] = -scores.reshape(b, -1)
        elif order == "kept":
            # What the mask lets through, keep_i * ||x_i||.
            out[order] = (keep * norms).reshape(b, -1)
        elif order == "magnitude":
            out[order] = norms.reshape(b, -1)
        elif order == "grad_cam":
            out[order] = cam.reshape(b, -1)
        else:
            out[order] = rng.random(norms.reshape(b, -1).shape)
    return out


def deletion_curve(
    model,
    data,
    layer=None,
    orders=None,
    direction="lerf",
    steps=None,
    replace_keep=False,
    batch_size=32,
    step_batch_size=None,
    seed=0,
    verbose=0,
):
    """Deletion curve: accuracy as tokens are deleted at a layer.

    The model is split at the layer: an `EnergyMask`, or any layer with a
    4-D output (also when the layer sits inside a nested Functional
    backbone). The part before the cut runs once per batch of images and
    gives the features, the layer's scores `z`, keep map and token norms.
    For every number `k` of deleted tokens, a binary mask removes the first
    `k` tokens of an order and only the part after the cut runs, on
    `layer.apply_keep(features, keep * binary)`.
    The deletion steps of all orders are stacked along the batch axis, so
    the whole curve costs one pass of the first part plus a few large
    batched passes of the (usually small) second part.

    Orders, in `direction="lerf"` (least relevant first, the paper's LeRF):
    `"energy"` deletes the highest score `z` first (lowest keep logit),
    `"kept"` the lowest `keep_i * ||x_i||` first (the norm of what the mask
    lets through at the token), `"magnitude"` the lowest token norm
    `||x_i||` first, `"random"` a seeded
    random permutation, `"grad_cam"` the lowest Grad-CAM (at the layer's
    output, for the predicted class, averaged per token) first. With
    `direction="morf"` each order is reversed.

    At a layer that is not an `EnergyMask` (a baseline without a mask) a
    token is one spatial position of the layer's output, the keep map is
    all ones and there is no `"energy"` order. Deleting a token sets the
    layer's output there to zero; with `replace_keep=False` the remaining
    positions are also multiplied by `N / (N - k)` (the rescaling of an
    `EnergyMask` with `rescale=True` and a keep of one, so the numbers
    match those of an identity mask inserted after the layer), with
    `replace_keep=True` they are left unchanged.

    Args:
        model: a Functional or Sequential Keras classifier.
            A one-unit output is read as a logit (class 1 when > 0) unless
            the final layer has a sigmoid or softmax activation (class 1
            when > 0.5).
        data: labelled data as `model.evaluate` takes it: a tuple `(x, y)` of
            arrays (integer or one-hot labels), a `tf.data.Dataset` or any
            iterable of `(x, y)` batches, or a `keras.utils.PyDataset`.
        layer: name or instance of the layer to cut at, an `EnergyMask` or
            any layer with a 4-D output, or `None` for the model's last
            `EnergyMask`. Defaults to `None`.
        orders: names among `"energy"` and `"kept"` (both only at an
            `EnergyMask`), `"magnitude"`, `"random"`, `"grad_cam"`, or
            `None` for all that apply: all five at an `EnergyMask`, the
            last three elsewhere. Defaults to `None`.
        direction: `"lerf"` or `"morf"`. Defaults to `"lerf"`.
        steps: `None` for every `k = 0..N` (`N + 1` points, full
            resolution), or an int >= 2 for that many evenly spaced `k`
            (rounded, duplicates dropped). Defaults to `None`.
        replace_keep: if `True`, the binary mask replaces the layer's keep
            (no rescaling): the reference protocol. If `False`, the keep is
            multiplied by the binary mask. Defaults to `False`.
        batch_size: images per pass of the part before the layer (arrays
            only; datasets keep their own batches). Defaults to `32`.
        step_batch_size: rows (images x steps) per pass of the part after
            the layer, or `None` for `8 * batch_size`. Defaults to `None`.
        seed: int seed of the `"random"` order. Defaults to `0`.
        verbose: `0` (silent), `1` or `"auto"` (a `keras.utils.Progbar`
            per batch, as `model.evaluate` shows) or `2` (one line at the
            end). Defaults to `0`.

    Returns:
        A `DeletionCurveResult` with `.fractions`, `.accuracy` (order ->
        % per step), `.auc`, `.to_dict()` and `.plot()`.

    Examples:

    ```python
    import numpy as np
    import keras
    import keras_ersm

    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras_ersm.EnergyMask(patch_size=4),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ])
    x = np.random.rand(8, 16, 16, 3).astype("float32")
    y = np.random.randint(0, 2, 8)
    result = keras_ersm.evaluation.deletion_curve(
        model, (x, y), orders=("energy", "random"))
    assert len(result.fractions) == 17  # 16 tokens + 1
    print(result.auc["energy"], result.to_dict()["fractions"][:3])
    ```
    """
    cut = _graph.Cut(_graph.resolve_cut_layer(model, layer))
    orders = check_orders(orders, cut)
    if direction not in DIRECTIONS:
        raise _graph.invalid("direction", f"one of {DIRECTIONS}", direction)
    replace_keep = _validation.check_bool("replace_keep", replace_keep)
    _data.check_batch_size(batch_size)
    if step_batch_size is None:
        step_batch_size = 8 * batch_size
    _data.check_batch_size(step_batch_size, "step_batch_size")
    if steps is not None:
        deletion_ks(2, steps)  # Validates before any work.
    split = _graph.cached_split("deletion", model, cut.layer, replace_keep)
    threshold = _data.output_threshold(model)
    rng = np.random.default_rng(seed)

    ks = correct = None
    total = 0
    num_tokens = 0
    batches = _data.iter_batches(data, batch_size, model=model)
    for x, y in _progress.track(batches, data, batch_size, verbose):
        if not _data.batch_size_of(x):
            continue  # An empty batch of an iterable, as `keep_maps` skips.
        outs = split.first.predict_on_batch(x)
        features, scores = outs["features"], outs.get("scores")
        keep, norms = outs["keep"], outs["norms"]
        cuts = split.cuts(outs)
        labels = _data.labels_to_classes(y)
        b = features.shape[0]
        if len(labels) != b:
            raise _graph.invalid(
                "data", "as many labels as images", f"{len(labels)} labels, {b} images"
            )
        grid = keep.shape[1:]
        num_tokens = int(np.prod(grid))
        if ks is None:
            ks = deletion_ks(num_tokens, steps)
            correct = {o: np.zeros(len(ks), dtype="int64") for o in orders}
        cam = None
        if "grad_cam" in orders:
            cam = _token_grad_cam(split, outs, features, keep, threshold)
        priorities = _priorities(orders, scores, keep, norms, cam, rng)
        positions = {o: deletion_positions(p, direction) for o, p in priorities.items()}
        keep_flat = keep.reshape(b, -1)
        blocks = [(o, i) for o in orders for i in range(len(ks))]
        per_call = min(max(1, step_batch_size // b), len(blocks))
        for start in range(0, len(blocks), per_call):
            chunk = blocks[start : start + per_call]
            # The last chunk is padded to the same size (outputs discarded),
            # so the second part sees one input shape per batch size.
            padded = chunk + [chunk[0]] * (per_call - len(chunk))
            binary = np.stack([positions[o] >= ks[i] for o, i in padded])
            if replace_keep:
                keep_rows = binary.astype("float32")
            else:
                keep_rows = binary * keep_flat[None]
            keep_rows = keep_rows.reshape((per_call * b, *grid)).astype("float32")
            preds = split.second.predict_on_batch([features, keep_rows, *cuts])
            hits = _data.predictions_to_classes(preds, threshold)
            hits = hits.reshape(per_call, b)
            hits = (hits[: len(chunk)] == labels[None]).sum(axis=1)
            for (o, i), h in zip(chunk, hits, strict=True):
                correct[o][i] += h
        total += b
    if total == 0:
        raise _graph.invalid("data", "at least one labelled image", "empty data")
    accuracy = {o: 100.0 * correct[o] / total for o in orders}
    return DeletionCurveResult(
        ks / num_tokens,
        accuracy,
        direction,
        num_tokens,
        total,
        cut.name,
        replace_keep,
    )


def _token_grad_cam(split, outs, features, keep, threshold):
    """Grad-CAM at the cut layer's (masked) output, averaged per token."""
    cut = split.cut
    masked = _data.to_numpy(cut.apply_keep(keras.ops.convert_to_tensor(features), keep))
    head_cuts = split.head_cuts(outs)
    preds = split.head.predict_on_batch([masked, *head_cuts])
    classes = _data.predictions_to_classes(preds, threshold)
    cam = gradients.head_cam(split.head, masked, head_cuts, classes, cut.data_format)
    return pool_to_tokens(cam, cut.patch_size)
