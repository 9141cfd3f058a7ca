"""Pure `keras.ops` building blocks of Energy-Regularized Spatial Masking.

Every function here is backend-agnostic, differentiable and jit-safe. Token
maps are always channels_last: `(batch, grid_h, grid_w, depth)` with
`depth = patch_size * patch_size * channels` ordered (row in patch, column in
patch, channel), as in docs/concepts.md, "Tokens".
"""

import keras
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


def _pad_grid(x, rows, cols, zero_row, zero_col):
    """Zero-pads a `(B, h, w)` map by one row and/or column.

    `rows` and `cols` are (before, after) with values 0 or 1; `zero_row`
    is a zero map `(B, 1, w)` (unused when `rows == (0, 0)`), `zero_col` a
    zero map `(B, h', 1)` with `h'` the height after the row padding
    (unused when `cols == (0, 0)`). Concatenation, not `ops.pad`, which
    costs over ten times as much on torch for maps this small.
    """
    if rows != (0, 0):
        x = ops.concatenate([zero_row, x] if rows[0] else [x, zero_row], axis=1)
    if cols != (0, 0):
        x = ops.concatenate([zero_col, x] if cols[0] else [x, zero_col], axis=2)
    return x


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


def _cond(pred, true_fn, false_fn):
    """`ops.cond`; on torch outside symbolic tracing, a plain Python branch.

    Torch runs eagerly and `ops.cond` there only evaluates `pred` and calls
    one branch, after building a Keras `Operation` (about 0.2 ms a call,
    measured in benchmarks/speed.py); the branch below does the same
    without it. Symbolic torch tensors (the "meta" device) take `true_fn`,
    as `ops.cond` does.
    """
    if keras.backend.backend() == "torch":
        if pred.device.type == "meta" or bool(pred):
            return true_fn()
        return false_fn()
    return ops.cond(pred, true_fn, false_fn)


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

    return _cond(ops.all(ops.isfinite(ops.square(norms))), plain, scaled)


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


# Backends whose neighbour dot products come from strided windows over the
# flattened tokens (`_window_pair_dots`, torch only: it needs `as_strided`
# and a hand-written backward). The XLA backends (JAX, TensorFlow) fuse the
# shifted products of `_shifted_pair_dots` into about the same cost
# (measured in benchmarks/speed.py), so they keep the generic code.
_WINDOW_BACKENDS = ("torch",)


def _shifted_pair_dots(unit):
    """The four forward neighbour pairs' dot products of `unit`, generic.

    Returns `(right, down, down_right, down_left)` of shapes
    `(B, gh, gw-1)`, `(B, gh-1, gw)`, `(B, gh-1, gw-1)`, `(B, gh-1, gw-1)`.
    """
    right = _dot(unit[:, :, :-1], unit[:, :, 1:])
    down = _dot(unit[:, :-1], unit[:, 1:])
    down_right = _dot(unit[:, :-1, :-1], unit[:, 1:, 1:])
    down_left = _dot(unit[:, :-1, 1:], unit[:, 1:, :-1])
    return right, down, down_right, down_left


_TORCH_WINDOW_DOTS = []


def _torch_window_dots_function():
    """The torch autograd function behind `_window_pair_dots` (built once).

    Backend-specific fast path (torch only, see `_WINDOW_BACKENDS`). On the
    tokens flattened to `x` of shape `(N, D)` (batch and grid rows
    concatenated), every pair this layer needs is `x_i . x_{i+k}` for
    `k` in `(0, 1, gw-1, gw, gw+1)`. Overlapping strided views of `x`
    (`as_strided`, no copy) put the rows `i+1` (with `i` itself) and
    `i+gw-1 .. i+gw+1` beside row `i`, so two batched matmuls compute all
    five products reading `x` about once, with no full-size temporary.
    The backward is written out with the same windows (three batched
    matmuls accumulating into one gradient), where autograd through the
    views would scatter into zero-filled copies. Pairs that cross an image
    or a grid row are computed too; the caller drops them.
    """
    if _TORCH_WINDOW_DOTS:
        return _TORCH_WINDOW_DOTS[0]
    import torch

    def windows(x, start, count, size, step=1):
        # windows(x, s, n, m, step)[i, t] = x[s + step * i + t], a view of x.
        depth = x.shape[1]
        return x.as_strided(
            (count, size, depth),
            (step * depth, depth, 1),
            x.storage_offset() + start * depth,
        )

    class WindowDots(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, width):
            n, depth = x.shape
            # near[i] = (x_i . x_i, x_i . x_{i+1}); far[i, t] = x_i . x_{i+k_t}.
            near = x.new_zeros((n, 2))
            far = x.new_zeros((n, 3))
            # Rows in pairs (2j, 2j+1), a view of x, against windows of the
            # rows from 2j (near) and from 2j+w-1 (far): half as many
            # matmuls, each twice as large, measured faster than one row
            # at a time.
            blocks = max((n - 1) // 2, 0)  # the near window 2j .. 2j+2 exists
            if blocks:
                gram = torch.bmm(
                    x[: 2 * blocks].view(blocks, 2, depth),
                    windows(x, 0, blocks, 3, step=2).transpose(1, 2),
                )
                near[0 : 2 * blocks : 2] = gram[:, 0, :2]
                near[1 : 2 * blocks : 2] = gram[:, 1, 1:]
            done = 2 * blocks  # at most two rows left
            near[done:, 0] = (x[done:] * x[done:]).sum(-1)
            near[done : n - 1, 1] = (x[done : n - 1] * x[done + 1 :]).sum(-1)
            blocks = max((n - width - 1) // 2, 0)  # far window to 2j+w+2
            if blocks:
                gram = torch.bmm(
                    x[: 2 * blocks].view(blocks, 2, depth),
                    windows(x, width - 1, blocks, 4, step=2).transpose(1, 2),
                )
                far[0 : 2 * blocks : 2] = gram[:, 0, :3]
                far[1 : 2 * blocks : 2] = gram[:, 1, 1:]
            done = 2 * blocks
            for t, k in enumerate((width - 1, width, width + 1)):
                if n - k > done:
                    far[done : n - k, t] = (x[done : n - k] * x[done + k :]).sum(-1)
            ctx.save_for_backward(x)
            ctx.width = width
            ctx.set_materialize_grads(False)
            return near, far

        @staticmethod
        def backward(ctx, g_near, g_far):
            if torch.is_grad_enabled():
                # `create_graph=True`: this backward is not differentiable
                # itself, and a silently missing second-order term would be
                # a wrong result.
                raise RuntimeError(
                    "EnergyMask's PyTorch fast path has no second-order "
                    "gradient (received a backward pass with "
                    "create_graph=True, e.g. for a gradient penalty). Use the "
                    "JAX or TensorFlow backend for higher-order gradients."
                )
            (x,) = ctx.saved_tensors
            n, width = x.shape[0], ctx.width
            if g_near is None:
                g_near = x.new_zeros((n, 2))
            if g_far is None and not g_near[:, 1].any():
                # Only the squared norms reach the loss.
                return (2.0 * g_near[:, 0])[:, None] * x, None
            self_coef = 2.0 * g_near[:, 0]
            g_right = g_near[:, 1]
            grad = torch.empty_like(x)
            # Near pairs: grad_i = g_{i-1} x_{i-1} + 2 g0_i x_i + g_i x_{i+1}.
            if n > 2:
                coef = torch.stack(
                    [g_right[: n - 2], self_coef[1 : n - 1], g_right[1 : n - 1]], 1
                )
                torch.bmm(
                    coef.unsqueeze(1),
                    windows(x, 0, n - 2, 3),
                    out=grad[1 : n - 1].unsqueeze(1),
                )
            if n > 0:
                grad[0] = self_coef[0] * x[0]
                if n > 1:
                    grad[0] += g_right[0] * x[1]
                    grad[n - 1] = (
                        self_coef[n - 1] * x[n - 1] + g_right[n - 2] * x[n - 2]
                    )
            far = (width - 1, width, width + 1)
            bulk = max(n - width - 1, 0)
            grad_rows = grad.unsqueeze(1)
            if g_far is None:
                return grad, None
            g_far = g_far.contiguous()
            if bulk:
                # Row i's own far pairs: grad_i += sum_t g_far[i, t] x_{i+k_t}.
                grad_rows[:bulk].baddbmm_(
                    g_far[:bulk].unsqueeze(1), windows(x, width - 1, bulk, 3)
                )
                # Row j as the far partner: the windows x_{j-w-1 .. j-w+1}
                # weighted by g_far[j-w-1, 2], g_far[j-w, 1], g_far[j-w+1, 0].
                coef = g_far.as_strided(
                    (bulk, 3), (3, 2), g_far.storage_offset() + 2
                ).contiguous()
                grad_rows[width + 1 :].baddbmm_(
                    coef.unsqueeze(1), windows(x, 0, bulk, 3)
                )
            for t, k in enumerate(far):
                if n - k > bulk:  # own far pairs of the rows past the bulk
                    grad[bulk : n - k] += g_far[bulk : n - k, t, None] * x[bulk + k :]
                top = min(width + 1, n)
                if top > k:  # partners before the bulk
                    grad[k:top] += g_far[: top - k, t, None] * x[: top - k]
            return grad, None

    _TORCH_WINDOW_DOTS.append(WindowDots)
    return WindowDots


def _window_pair_dots(tokens):
    """`(squared_norms, pairs)` of `tokens` from `_torch_window_dots_function`.

    `pairs` as `_shifted_pair_dots` returns them, `squared_norms` of shape
    `(B, gh, gw)`.
    """
    _, height, width, depth = tokens.shape
    # Torch tensor methods: `ops.reshape` costs tens of microseconds a call.
    flat = tokens.reshape(-1, depth).contiguous()
    near, far = _torch_window_dots_function().apply(flat, width)
    near = near.view(-1, height, width, 2)
    far = far.view(-1, height, width, 3)
    right = near[:, :, :-1, 1]
    down = far[:, :-1, :, 1]
    down_right = far[:, :-1, :-1, 2]
    down_left = far[:, :-1, 1:, 0]
    return near[..., 0], (right, down, down_right, down_left)


def _use_windows(tokens):
    return keras.backend.backend() in _WINDOW_BACKENDS and all(
        isinstance(d, int) for d in tokens.shape[1:]
    )


def pair_dots(unit):
    """Dot products `unit_i . unit_j` of the four forward neighbour pairs.

    Args:
        unit: `(B, gh, gw, D)` tokens (e.g. `unit` from `unit_tokens`).

    Returns:
        Tuple `(right, down, down_right, down_left)` of shapes
        `(B, gh, gw-1)`, `(B, gh-1, gw)`, `(B, gh-1, gw-1)` and
        `(B, gh-1, gw-1)`; `down_left[b, r, c]` pairs `(r, c+1)` with
        `(r+1, c)`.
    """
    unit = ops.convert_to_tensor(unit)
    if _use_windows(unit):
        return _window_pair_dots(unit)[1]
    return _shifted_pair_dots(unit)


def redundancy_from_pairs(pairs, inv):
    """Redundancy `S_i` from `pair_dots` of `unit` and `inv` of `unit_tokens`.

    Each pair's `p_hat_i . p_hat_j = (unit_i . unit_j) inv_i inv_j` is
    credited to both of its tokens.

    Args:
        pairs: the four pair maps `(right, down, down_right, down_left)`
            of `pair_dots` (or `unit_tokens_and_pairs`), of shapes
            `(B, gh, gw - 1)`, `(B, gh - 1, gw)`, `(B, gh - 1, gw - 1)` and
            `(B, gh - 1, gw - 1)`.
        inv: `(B, gh, gw)` inverse norms of `unit_tokens`.

    Returns:
        Tensor `(B, gh, gw)`.
    """
    right, down, down_right, down_left = pairs
    right = right * inv[:, :, :-1] * inv[:, :, 1:]
    down = down * inv[:, :-1] * inv[:, 1:]
    down_right = down_right * inv[:, :-1, :-1] * inv[:, 1:, 1:]
    down_left = down_left * inv[:, :-1, 1:] * inv[:, 1:, :-1]
    # Each pair map is credited to both of its tokens: the first token of a
    # pair is padded after the pair map, the second one before it. The
    # three pair maps between two grid rows are summed before their rows
    # are padded.
    before, after, none = (1, 0), (0, 1), (0, 0)
    row = ops.zeros_like(inv[:, :1])  # (B, 1, w)
    col = ops.zeros_like(inv[:, :, :1])  # (B, h, 1)
    short_col = col[:, 1:]  # (B, h-1, 1)
    upper = (
        down
        + _pad_grid(down_right, none, after, None, short_col)
        + _pad_grid(down_left, none, before, None, short_col)
    )
    lower = (
        down
        + _pad_grid(down_right, none, before, None, short_col)
        + _pad_grid(down_left, none, after, None, short_col)
    )
    return (
        _pad_grid(right, none, after, None, col)
        + _pad_grid(right, none, before, None, col)
        + _pad_grid(upper, after, none, row, None)
        + _pad_grid(lower, before, none, row, None)
    )


def pair_redundancy(unit, inv):
    """Neighbour redundancy `S_i = sum_{j in N8(i)} p_hat_i . p_hat_j`.

    Takes the output of `unit_tokens` (`p_hat = unit * inv[..., None]`)
    and never materialises `p_hat`: the dot products of the four forward
    neighbour pairs (right, down, down-right, down-left) are computed once
    each (`pair_dots`) and credited to both tokens. On torch they come
    from two batched matmuls over strided windows of the tokens (no
    full-size temporaries).

    Args:
        unit: `(B, gh, gw, D)` tokens from `unit_tokens`.
        inv: `(B, gh, gw)` inverse norms from `unit_tokens`.

    Returns:
        Tensor `(B, gh, gw)`.
    """
    return redundancy_from_pairs(pair_dots(unit), inv)


def unit_tokens_and_pairs(tokens, epsilon=EPSILON):
    """`unit_tokens` and `pair_dots(unit)` together, `(unit, inv, pairs)`.

    On torch the squared norms and the pair dot products come from the
    same strided-window matmuls, reading the tokens about once. Feed
    `pairs` and `inv` to `redundancy_from_pairs`.

    Args:
        tokens: `(B, gh, gw, D)` float tensor.
        epsilon: normalisation epsilon. Defaults to `1e-6`.

    Returns:
        Tuple `(unit, inv, pairs)`.

    Examples:

    ```python
    import numpy as np
    from keras_ersm import ops as ersm_ops
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype("float32")
    unit, inv, pairs = ersm_ops.unit_tokens_and_pairs(x)
    redundancy = ersm_ops.redundancy_from_pairs(pairs, inv)
    p_hat, _ = ersm_ops.normalize_tokens(x)
    np.testing.assert_allclose(
        redundancy, ersm_ops.redundancy(p_hat), rtol=1e-4, atol=1e-5)
    ```
    """
    tokens = ops.convert_to_tensor(tokens)
    if not _use_windows(tokens):
        unit, scale, unit_norms = _safe_unit_tokens(tokens)
        pairs = _shifted_pair_dots(unit)
        return unit, 1.0 / (unit_norms + epsilon / scale), pairs
    squared, pairs = _window_pair_dots(tokens)

    def plain():
        norms = ops.sqrt(ops.maximum(squared, _NORM_FLOOR))
        return tokens, 1.0 / (norms + epsilon), pairs

    def scaled():
        unit, scale, unit_norms = _scaled_tokens(tokens)
        inv = 1.0 / (unit_norms + epsilon / scale)
        return unit, inv, _window_pair_dots(unit)[1]

    # As in `_safe_unit_tokens`: scale only when a squared norm overflows.
    return _cond(ops.all(ops.isfinite(squared)), plain, scaled)


def scores_and_redundancy(tokens, kernel, epsilon=EPSILON):
    """Unbiased scores `w . p_hat_i` and redundancy `S_i` in one pass.

    The fast path of the layer: `unit_tokens_and_pairs`, then `projections`
    and `redundancy_from_pairs`. `p_hat` is never materialised, each token
    is divided by its largest magnitude only when a squared norm
    overflows, and every neighbour pair's dot product is computed once.
    The cost is linear in the number of elements.

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
    unit, inv, pairs = unit_tokens_and_pairs(tokens, epsilon)
    return projections(unit, inv, kernel), redundancy_from_pairs(pairs, inv)


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
