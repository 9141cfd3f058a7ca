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
