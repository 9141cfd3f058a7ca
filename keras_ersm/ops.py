"""Pure `keras.ops` building blocks of Energy-Regularized Spatial Masking.

Every function here is backend-agnostic, differentiable and jit-safe. Token
maps are always channels_last: `(batch, grid_h, grid_w, depth)` with
`depth = patch_size * patch_size * channels` ordered (row in patch, column in
patch, channel), as in docs/concepts.md, "Tokens".
"""

import keras
import numpy as np
from keras import ops

EPSILON = 1e-6
# Floor under the squared norm before the square root: keeps the gradient of
# an all-zero token finite (0 instead of 0 * inf) and is far below EPSILON.
_NORM_FLOOR = 1e-30


def to_channels_last(x, data_format):
    """Returns a 4-D feature map in channels_last order."""
    if data_format == "channels_first":
        return ops.transpose(x, (0, 2, 3, 1))
    return x


def tokenize(x, patch_size):
    """Cuts a channels_last feature map into non-overlapping patches.

    Args:
        x: tensor of shape `(B, H, W, C)`; `H` and `W` divisible by
            `patch_size`.
        patch_size: int, side `p` of a square patch.

    Returns:
        Tensor of shape `(B, H // p, W // p, p * p * C)`, each token ordered
        (row in patch, column in patch, channel).

    Examples:

    ```python
    import numpy as np
    from keras_ersm import ops as ersm_ops
    x = np.arange(2 * 4 * 4 * 3, dtype="float32").reshape(2, 4, 4, 3)
    tokens = ersm_ops.tokenize(x, 2)
    assert tuple(tokens.shape) == (2, 2, 2, 12)
    ```
    """
    if patch_size == 1:
        return x
    p = patch_size
    _, h, w, c = ops.shape(x)
    x = ops.reshape(x, (-1, h // p, p, w // p, p, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, h // p, w // p, p * p * c))


def untokenize(tokens, patch_size, channels):
    """Inverse of `tokenize`: `(B, gh, gw, p*p*C)` back to `(B, H, W, C)`."""
    if patch_size == 1:
        return tokens
    p = patch_size
    _, gh, gw, _ = ops.shape(tokens)
    x = ops.reshape(tokens, (-1, gh, gw, p, p, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, gh * p, gw * p, channels))


def _scaled_tokens(tokens):
    """Returns `(unit, scale, unit_norms)` with `tokens = unit * scale`.

    `scale` is each token's largest magnitude (1 for an all-zero token), so
    `unit` lies in [-1, 1] and its squared norm neither overflows (for
    magnitudes up to the float32 maximum) nor underflows.
    """
    scale = ops.max(ops.abs(tokens), axis=-1, initial=0.0)
    scale = ops.where(scale > 0, scale, ops.ones_like(scale))
    unit = tokens / scale[..., None]
    squared = ops.sum(ops.square(unit), axis=-1)
    return unit, scale, ops.sqrt(ops.maximum(squared, _NORM_FLOOR))


def token_norms(tokens):
    """L2 norm of each token, `(B, gh, gw)`, with a finite gradient at 0.

    Computed as `scale * ||x / scale||` with `scale = max |x|`, so huge
    (e.g. 1e30) and tiny (e.g. 1e-30) magnitudes give the right norm.
    """
    _, scale, unit_norms = _scaled_tokens(tokens)
    return scale * unit_norms


def normalize_tokens(tokens, epsilon=EPSILON):
    """Returns `(p_hat, norms)`: `p_hat = x / (||x|| + epsilon)` per token.

    `p_hat` is computed as `(x / s) / (||x / s|| + epsilon / s)` with
    `s = max |x|`, the same value without overflow for huge magnitudes.
    """
    unit, scale, unit_norms = _scaled_tokens(tokens)
    p_hat = unit / (unit_norms + epsilon / scale)[..., None]
    return p_hat, scale * unit_norms


def box_sum_3x3(x):
    """Sum over each 3x3 neighbourhood (self included) of a channels_last map.

    Positions outside the grid count as zero. Computed as two separable
    three-term sums, so the cost is linear in the number of elements.

    Args:
        x: tensor `(B, gh, gw, D)`.

    Returns:
        Tensor of the same shape.
    """
    padded = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows = padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]
    return rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]


def neighbour_sum(x):
    """Sum over the 8 neighbours (self excluded) of a `(B, gh, gw)` map."""
    return box_sum_3x3(x[..., None])[..., 0] - x


def redundancy(p_hat, norms=None, epsilon=EPSILON):
    """Neighbour redundancy `S_i = sum_{j in N8(i)} p_hat_i . p_hat_j`.

    Uses `S_i = p_hat_i . (box3x3(p_hat)_i - p_hat_i)`: one box sum and one
    dot product, no shifted copies.

    Args:
        p_hat: normalised tokens `(B, gh, gw, D)`.
        norms: optional token norms from `normalize_tokens`; when given,
            `||p_hat_i||^2` is computed from them instead of from `p_hat`.
        epsilon: the normalisation epsilon used for `p_hat`.

    Returns:
        Tensor `(B, gh, gw)`.
    """
    dots = ops.sum(p_hat * box_sum_3x3(p_hat), axis=-1)
    if norms is None:
        self_dot = ops.sum(ops.square(p_hat), axis=-1)
    else:
        # norms / (norms + epsilon), finite for infinite norms too.
        self_dot = ops.square(1.0 / (1.0 + epsilon / norms))
    return dots - self_dot


def _dot(a, b):
    return ops.sum(a * b, axis=-1)


def _pad_grid(x, rows, cols):
    """Zero-pads a `(B, h, w)` map; `rows` and `cols` are (before, after)."""
    return ops.pad(x, ((0, 0), rows, cols))


def _plain_norms(tokens):
    """Token norms without scaling, as the backend computes them fastest.

    On torch, `linalg.vector_norm` is one pass with a zero gradient at an
    all-zero token; under XLA (JAX, TensorFlow) the squared sum fuses into
    one pass and the floor keeps the gradient at zero finite.
    """
    if keras.backend.backend() == "torch":
        return ops.norm(tokens, axis=-1)
    squared = ops.sum(ops.square(tokens), axis=-1)
    return ops.sqrt(ops.maximum(squared, _NORM_FLOOR))


def _safe_unit_tokens(tokens):
    """`_scaled_tokens` only when the plain squared norms overflow.

    The common case costs one pass (the norms); the per-token max-magnitude
    scaling (three more passes) runs, through `ops.cond`, only for a batch
    with a token whose squared norm is not finite (magnitudes above ~1e19,
    or NaN/Inf inputs). The squared norm must be finite because the
    neighbour dot products reach it.
    """
    norms = _plain_norms(tokens)

    def plain():
        return tokens, ops.ones_like(norms), norms

    def scaled():
        return _scaled_tokens(tokens)

    return ops.cond(ops.all(ops.isfinite(ops.square(norms))), plain, scaled)


def unit_tokens(tokens, epsilon=EPSILON):
    """Returns `(unit, inv)` with `p_hat = unit * inv[..., None]`.

    `unit` is `tokens` itself unless a squared norm overflows (then each
    token divided by its largest magnitude), and
    `inv = 1 / (||unit|| + epsilon / scale)`, so the normalised tokens are
    never materialised. Both are differentiable: feed them to
    `projections` (keep path) and `pair_redundancy` (energy), the latter
    through `ops.stop_gradient` when the energy must not train the
    features.

    Args:
        tokens: `(B, gh, gw, D)` float tensor.
        epsilon: normalisation epsilon. Defaults to `1e-6`.

    Returns:
        Tuple `(unit, inv)` of shapes `(B, gh, gw, D)` and `(B, gh, gw)`.

    Examples:

    ```python
    import numpy as np
    from keras_ersm import ops as ersm_ops
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 4)).astype("float32")
    unit, inv = ersm_ops.unit_tokens(x)
    p_hat, _ = ersm_ops.normalize_tokens(x)
    np.testing.assert_allclose(unit * inv[..., None], p_hat, rtol=1e-5)
    ```
    """
    unit, scale, unit_norms = _safe_unit_tokens(ops.convert_to_tensor(tokens))
    return unit, 1.0 / (unit_norms + epsilon / scale)


def projections(unit, inv, kernel):
    """Unbiased scores `w . p_hat_i` from `unit_tokens`, `(B, gh, gw)`."""
    return ops.matmul(unit, kernel)[..., 0] * inv


# On these backends, grids of static width up to `_GRAM_MAX_WIDTH` use the
# row Gram matrices (batched matmul, cost grows with the width); wider grids
# and the XLA backends (which fuse the shifted dot products into about the
# same cost, measured in benchmarks/speed.py) use the four shifted products.
_GRAM_BACKENDS = ("torch",)
_GRAM_MAX_WIDTH = 16


def _band(width, offsets):
    """Constant `(width, width)` float mask of `|i - j|` in `offsets`."""
    i = np.arange(width)
    band = np.isin(np.abs(i[:, None] - i[None, :]), offsets)
    return ops.convert_to_tensor(band.astype("float32"))


def _redundancy_gram(unit, inv, height, width):
    """Redundancy from two batched matmuls over the rows of the grid.

    `rows @ rows^T` holds every within-row pair (right neighbours on its
    first off-diagonals), `rows[:-1] @ rows[1:]^T` every pair of a row
    with the next one (down, down-left and down-right on its three central
    diagonals). The matmuls read the tokens once each and write only
    `(rows, w, w)` maps, and their backward is two more matmuls each.
    """
    depth = ops.shape(unit)[-1]
    rows = ops.reshape(unit, (-1, width, depth))
    inv = ops.reshape(inv, (-1, width))
    same = ops.matmul(rows, ops.transpose(rows, (0, 2, 1)))
    same = same * (inv[:, :, None] * inv[:, None, :]) * _band(width, [1])
    red = ops.sum(same, axis=-1)
    down = ops.matmul(rows[:-1], ops.transpose(rows[1:], (0, 2, 1)))
    # A row's last grid row has no row below it in the same image.
    pairs = ops.shape(rows)[0] - 1
    row_index = ops.arange(max(pairs, 0) if isinstance(pairs, int) else pairs)
    not_last = ops.cast(row_index % height < height - 1, "float32")
    weight = inv[:-1, :, None] * inv[1:, None, :] * _band(width, [0, 1])
    down = down * (weight * not_last[:, None, None])
    red = (
        red
        + ops.pad(ops.sum(down, axis=-1), ((0, 1), (0, 0)))
        + ops.pad(ops.sum(down, axis=-2), ((1, 0), (0, 0)))
    )
    return ops.reshape(red, (-1, height, width))


def _redundancy_shifted(unit, inv):
    """Redundancy from the four forward neighbour pairs' dot products."""
    right = _dot(unit[:, :, :-1], unit[:, :, 1:]) * inv[:, :, :-1] * inv[:, :, 1:]
    down = _dot(unit[:, :-1], unit[:, 1:]) * inv[:, :-1] * inv[:, 1:]
    down_right = (
        _dot(unit[:, :-1, :-1], unit[:, 1:, 1:]) * inv[:, :-1, :-1] * inv[:, 1:, 1:]
    )
    down_left = (
        _dot(unit[:, :-1, 1:], unit[:, 1:, :-1]) * inv[:, :-1, 1:] * inv[:, 1:, :-1]
    )
    # Each pair map is credited to both of its tokens: the first token of a
    # pair is padded after the pair map, the second one before it.
    before, after, none = (1, 0), (0, 1), (0, 0)
    return (
        _pad_grid(right, none, after)
        + _pad_grid(right, none, before)
        + _pad_grid(down, after, none)
        + _pad_grid(down, before, none)
        + _pad_grid(down_right, after, after)
        + _pad_grid(down_right, before, before)
        + _pad_grid(down_left, after, before)
        + _pad_grid(down_left, before, after)
    )


def pair_redundancy(unit, inv):
    """Neighbour redundancy `S_i = sum_{j in N8(i)} p_hat_i . p_hat_j`.

    Takes the output of `unit_tokens` (`p_hat = unit * inv[..., None]`)
    and never materialises `p_hat`. On torch, grids of static width up to
    16 use two batched matmuls over the grid rows (no full-size
    elementwise temporaries); otherwise the dot products of the
    four forward neighbour pairs (right, down, down-right, down-left) are
    computed once each and credited to both tokens.

    Args:
        unit: `(B, gh, gw, D)` tokens from `unit_tokens`.
        inv: `(B, gh, gw)` inverse norms from `unit_tokens`.

    Returns:
        Tensor `(B, gh, gw)`.
    """
    height, width = unit.shape[1], unit.shape[2]
    if (
        keras.backend.backend() in _GRAM_BACKENDS
        and isinstance(height, int)
        and isinstance(width, int)
        and width <= _GRAM_MAX_WIDTH
    ):
        return _redundancy_gram(unit, inv, height, width)
    return _redundancy_shifted(unit, inv)


def scores_and_redundancy(tokens, kernel, epsilon=EPSILON):
    """Unbiased scores `w . p_hat_i` and redundancy `S_i` in one pass.

    The fast path of the layer: `unit_tokens`, then `projections` and
    `pair_redundancy`. `p_hat` is never materialised, each token is
    divided by its largest magnitude only when a squared norm overflows,
    and every neighbour pair's dot product is computed once. The cost is
    linear in the number of elements.

    Args:
        tokens: `(B, gh, gw, D)` float tensor.
        kernel: `(D, 1)` scoring kernel.
        epsilon: normalisation epsilon. Defaults to `1e-6`.

    Returns:
        Tuple `(projections, redundancy)`, both `(B, gh, gw)`:
        `projections_i = w . p_hat_i` and
        `redundancy_i = sum_{j in N8(i)} p_hat_i . p_hat_j`.

    Examples:

    ```python
    import numpy as np
    from keras_ersm import ops as ersm_ops
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 8)).astype("float32")
    w = np.ones((8, 1), "float32")
    proj, red = ersm_ops.scores_and_redundancy(x, w)
    p_hat, norms = ersm_ops.normalize_tokens(x)
    np.testing.assert_allclose(red, ersm_ops.redundancy(p_hat, norms), atol=1e-5)
    ```
    """
    unit, inv = unit_tokens(tokens, epsilon)
    return projections(unit, inv, kernel), pair_redundancy(unit, inv)


def mean_field(logits, coupling, steps):
    """Mean-field updates of a binary Potts field over N8.

    `q^0 = sigmoid(a)`, `q^{t+1} = sigmoid(a + beta * sum_{N8} (2 q^t - 1))`,
    with positions outside the grid contributing nothing.

    Args:
        logits: unary logits `a`, shape `(B, gh, gw)`.
        coupling: non-negative scalar `beta`.
        steps: number of updates `K` (Python int, `0` returns
            `sigmoid(logits)`). The updates run in `keras.ops.fori_loop`,
            so compile time does not grow with `K`.

    Returns:
        The marginals `q^K`, same shape as `logits`.

    Examples:

    ```python
    import numpy as np
    from keras_ersm import ops as ersm_ops
    a = np.random.default_rng(0).normal(size=(1, 6, 6)).astype("float32")
    q = ersm_ops.mean_field(a, 1.0, steps=3)
    assert tuple(q.shape) == (1, 6, 6)
    ```
    """
    logits = ops.convert_to_tensor(logits)
    q = ops.sigmoid(logits)
    if steps == 0:
        return q

    def update(q):
        return ops.sigmoid(logits + coupling * neighbour_sum(2.0 * q - 1.0))

    # A loop primitive, not an unrolled Python loop: compile time and graph
    # size stay flat in `steps`. `fori_loop` with static bounds is a
    # differentiable scan on JAX (and a plain loop on torch); TensorFlow's
    # XLA gradient of a while loop needs `maximum_iterations`.
    if keras.backend.backend() == "tensorflow":
        _, q = ops.while_loop(
            lambda i, q: i < steps,
            lambda i, q: (i + 1, update(q)),
            (0, q),
            maximum_iterations=steps,
        )
        return q
    return ops.fori_loop(0, steps, lambda _, q: update(q), q)


def upsample_tokens(token_map, patch_size):
    """Repeats a `(B, gh, gw)` map `p` times along both grid axes."""
    if patch_size == 1:
        return token_map
    token_map = ops.repeat(token_map, patch_size, axis=1)
    return ops.repeat(token_map, patch_size, axis=2)
