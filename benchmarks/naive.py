"""A straightforward implementation of the ERSM equations, for comparison.

This is how the reference code computes the layer: unfold the feature map
into tokens (a copy even for p = 1), build the neighbour redundancy from
eight shifted copies of the normalised tokens, multiply the tokens by keep
and fold them back. Pure keras.ops, so it runs on every backend.
"""

from keras import ops

EPS = 1e-6
NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def unfold(x, p):
    b, h, w, c = x.shape
    x = ops.reshape(x, (-1, h // p, p, w // p, p, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, h // p, w // p, p * p * c))


def fold(tokens, p, c):
    _, gh, gw, _ = tokens.shape
    x = ops.reshape(tokens, (-1, gh, gw, p, p, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, gh * p, gw * p, c))


def naive_ersm(x, kernel, bias, p=1, unary=1e-3, pairwise=1e-3):
    """Returns (output, loss) of reference ERSM, computed the naive way."""
    c = x.shape[-1]
    tokens = unfold(x, p)
    norms = ops.sqrt(ops.sum(tokens * tokens, axis=-1, keepdims=True))
    p_hat = tokens / (norms + EPS)
    scores = ops.matmul(p_hat, kernel)[..., 0] + bias
    keep = ops.sigmoid(-scores)
    gh, gw = scores.shape[1], scores.shape[2]
    padded = ops.pad(p_hat, ((0, 0), (1, 1), (1, 1), (0, 0)))
    redundancy = 0.0
    for dy, dx in NEIGHBOURS:
        shifted = padded[:, 1 + dy : 1 + dy + gh, 1 + dx : 1 + dx + gw]
        redundancy = redundancy + ops.sum(p_hat * shifted, axis=-1)
    energy = unary * ops.softplus(scores) + pairwise * ops.softplus(redundancy)
    loss = ops.mean(keep * energy)
    output = fold(tokens * keep[..., None], p, c)
    return output, loss


# --- The layer's fast path before issue 17, kept to time it side by side ---
#
# `keras_ersm.ops.scores_and_redundancy` as of commit 51ab256: norms from a
# multiply-then-sum, and the four neighbour-pair dot products from shifted
# 4-D slices (each materialising a full-size product before its reduction).
# `benchmarks/speed.py --compare-previous` swaps
# `previous_unit_tokens_and_pairs` (the same computation in the layer's
# current interface) for `keras_ersm.ops.unit_tokens_and_pairs`.

_NORM_FLOOR = 1e-30


def _previous_scaled_tokens(tokens):
    scale = ops.max(ops.abs(tokens), axis=-1, initial=0.0)
    scale = ops.where(scale > 0, scale, ops.ones_like(scale))
    unit = tokens / scale[..., None]
    squared = ops.sum(ops.square(unit), axis=-1)
    return unit, scale, ops.sqrt(ops.maximum(squared, _NORM_FLOOR))


def _previous_safe_unit_tokens(tokens):
    squared = ops.sum(tokens * tokens, axis=-1)

    def plain():
        norms = ops.sqrt(ops.maximum(squared, _NORM_FLOOR))
        return tokens, ops.ones_like(squared), norms

    return ops.cond(
        ops.all(ops.isfinite(squared)), plain, lambda: _previous_scaled_tokens(tokens)
    )


def _dot(a, b):
    return ops.sum(a * b, axis=-1)


def _pad_grid(x, rows, cols):
    return ops.pad(x, ((0, 0), rows, cols))


def previous_scores_and_redundancy(tokens, kernel, epsilon=EPS):
    """The layer's `(projections, redundancy)` as computed before issue 17."""
    unit, scale, unit_norms = _previous_safe_unit_tokens(ops.convert_to_tensor(tokens))
    inv = 1.0 / (unit_norms + epsilon / scale)
    projections = ops.matmul(unit, kernel)[..., 0] * inv
    right = _dot(unit[:, :, :-1], unit[:, :, 1:]) * inv[:, :, :-1] * inv[:, :, 1:]
    down = _dot(unit[:, :-1], unit[:, 1:]) * inv[:, :-1] * inv[:, 1:]
    down_right = (
        _dot(unit[:, :-1, :-1], unit[:, 1:, 1:]) * inv[:, :-1, :-1] * inv[:, 1:, 1:]
    )
    down_left = (
        _dot(unit[:, :-1, 1:], unit[:, 1:, :-1]) * inv[:, :-1, 1:] * inv[:, 1:, :-1]
    )
    before, after, none = (1, 0), (0, 1), (0, 0)
    redundancy = (
        _pad_grid(right, none, after)
        + _pad_grid(right, none, before)
        + _pad_grid(down, after, none)
        + _pad_grid(down, before, none)
        + _pad_grid(down_right, after, after)
        + _pad_grid(down_right, before, before)
        + _pad_grid(down_left, after, before)
        + _pad_grid(down_left, before, after)
    )
    return projections, redundancy


def previous_unit_tokens_and_pairs(tokens, epsilon=EPS):
    """`keras_ersm.ops.unit_tokens_and_pairs` computed as before issue 17."""
    unit, scale, unit_norms = _previous_safe_unit_tokens(ops.convert_to_tensor(tokens))
    inv = 1.0 / (unit_norms + epsilon / scale)
    pairs = (
        _dot(unit[:, :, :-1], unit[:, :, 1:]),
        _dot(unit[:, :-1], unit[:, 1:]),
        _dot(unit[:, :-1, :-1], unit[:, 1:, 1:]),
        _dot(unit[:, :-1, 1:], unit[:, 1:, :-1]),
    )
    return unit, inv, pairs
