"""Independent float64 NumPy statement of the ERSM equations, for tests.

Written from the equations of `docs/concepts.md` ("The reference layer"
and "The coherent extension") with explicit loops over the eight
neighbours, deliberately unlike the box-sum implementation in `ops.py`.
"""

import numpy as np

EPS = 1e-6
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def softplus(x):
    return np.logaddexp(0.0, x)


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def tokens(x, p, data_format="channels_last"):
    """(B, H, W, C) or (B, C, H, W) -> (B, gh, gw, p*p*C), (row, col, ch)."""
    x = np.asarray(x, np.float64)
    if data_format == "channels_first":
        x = x.transpose(0, 2, 3, 1)
    b, h, w, c = x.shape
    gh, gw = h // p, w // p
    out = np.zeros((b, gh, gw, p * p * c))
    for i in range(gh):
        for j in range(gw):
            patch = x[:, i * p : (i + 1) * p, j * p : (j + 1) * p, :]
            out[:, i, j] = patch.reshape(b, -1)
    return out


def neighbour_sum(values):
    """Sum over the 8 neighbours of (B, gh, gw, ...) with zero padding."""
    out = np.zeros_like(values)
    gh, gw = values.shape[1], values.shape[2]
    for dy, dx in _NEIGHBOURS:
        for i in range(gh):
            for j in range(gw):
                ii, jj = i + dy, j + dx
                if 0 <= ii < gh and 0 <= jj < gw:
                    out[:, i, j] += values[:, ii, jj]
    return out


def reference_ersm(
    x,
    kernel,
    bias,
    p=1,
    temperature=1.0,
    unary=1e-3,
    pairwise=1e-3,
    coherence=0.0,
    steps=0,
    data_format="channels_last",
):
    """Returns a dict: output, scores, keep, redundancy, energy, loss."""
    t = tokens(x, p, data_format)
    norms = np.sqrt((t**2).sum(-1, keepdims=True))
    p_hat = t / (norms + EPS)
    scores = p_hat @ np.asarray(kernel, np.float64)[:, 0] + np.asarray(bias, np.float64)
    logits = -scores / temperature
    keep = sigmoid(logits)
    for _ in range(steps):
        keep = sigmoid(logits + coherence * neighbour_sum(2.0 * keep - 1.0))
    red = np.zeros(scores.shape)
    gh, gw = scores.shape[1:]
    for dy, dx in _NEIGHBOURS:
        for i in range(gh):
            for j in range(gw):
                ii, jj = i + dy, j + dx
                if 0 <= ii < gh and 0 <= jj < gw:
                    red[:, i, j] += (p_hat[:, i, j] * p_hat[:, ii, jj]).sum(-1)
    energy = unary * softplus(scores) + pairwise * softplus(red)
    loss = (keep * energy).mean()
    x64 = np.asarray(x, np.float64)
    keep_full = np.repeat(np.repeat(keep, p, axis=1), p, axis=2)
    if data_format == "channels_first":
        output = x64 * keep_full[:, None]
    else:
        output = x64 * keep_full[..., None]
    return {
        "output": output,
        "scores": scores,
        "keep": keep,
        "redundancy": red,
        "energy": energy,
        "loss": loss,
    }
