"""How far can the keep map's form localise? (issue 13)

The keep is `sigmoid(w . p_hat_i + b)`: one direction `w` on each token's
*unit* vector. This fits that form, and richer ones, to the object itself
(oracles, with labels the mask never sees): by least squares on each
token's share of object pixels, and for the pointing game itself. It
measures how well the fitted maps localise on the test images, next to
the class map (CAM), the token norm and the trained keep map. The fits
show what a form reaches, not a proven bound.

Two feature sets, per seed, on the bundled quality benchmark's small CNN
(`benchmarks/quality.py --quick`'s data and training):

- frozen: the trained baseline's last ReLU, the frozen recipe's mask input;
  its `keep` is the frozen recipe's mask (`EnergyMask()`, 4 epochs);
- from scratch: the input of the mask of `EnergyMask()` trained from
  scratch, with that model's keep map.

The measures do not depend on a map's contrast: the pointing game (the
map's peak on the object) and the AUROC, per image, of tokens at least a
quarter object against the others.

    KERAS_BACKEND=jax python -m benchmarks.score_ceiling --seeds 0 1 2

writes `benchmarks/results/score_ceiling_<backend>.{json,md}`.
"""

import argparse
import os
import sys
import time

import keras
import numpy as np

import keras_ersm
from benchmarks import _harness, quality
from keras_ersm.datasets import make_cluttered
from keras_ersm.evaluation.localization import localization_scores

RESULTS = os.path.join(os.path.dirname(__file__), "results")
OBJECT_TOKEN = 0.25  # a token's object share that counts it as object

MAPS = (
    ("keep", "the trained keep map"),
    ("cam", "the masked model's class map of its mask's input, max(0, w_y . x_i)"),
    ("baseline_cam", "the baseline's class map (its Grad-CAM at the last ReLU)"),
    ("norm", "token norm ‖x_i‖"),
    ("oracle_unit", "least squares: one direction on the unit token (the keep's form)"),
    (
        "pointing_unit",
        "fitted for the pointing game: one direction on the unit token",
    ),
    (
        "pointing_relative",
        "fitted for the pointing game: the token over its image's mean norm",
    ),
    (
        "oracle_unit_norm",
        "least squares: unit token + norm over image mean (norm_score's)",
    ),
    ("oracle_raw", "least squares: one direction on the raw token"),
    (
        "oracle_relative",
        "least squares: one direction on the token over its image's mean norm",
    ),
)


def object_share(masks, grid):
    """Each token's share of object pixels, `(B, grid, grid)`."""
    b, h, w = masks.shape
    cells = masks.reshape(b, grid, h // grid, grid, w // grid)
    return cells.mean(axis=(2, 4))


def unit(tokens):
    norms = np.linalg.norm(tokens, axis=-1, keepdims=True)
    return np.where(norms > 0, tokens / np.maximum(norms, 1e-12), 0.0)


def _image_mean_norm(tokens):
    norms = np.linalg.norm(tokens, axis=-1, keepdims=True)
    return np.maximum(norms.mean(axis=(1, 2), keepdims=True), 1e-12)


def relative_norm(tokens):
    """Each token's norm over its image's mean token norm."""
    return np.linalg.norm(tokens, axis=-1, keepdims=True) / _image_mean_norm(tokens)


def relative_tokens(tokens):
    """Each token over its image's mean token norm: direction and relative
    strength in one vector, independent of the features' overall scale."""
    return tokens / _image_mean_norm(tokens)


def oracle_fit(train_inputs, train_share, test_inputs, ridge=1e-2):
    """Least squares (with a bias and a small ridge) of the tokens' object
    share on `train_inputs`, applied to `test_inputs`."""
    x = train_inputs.reshape(-1, train_inputs.shape[-1]).astype(np.float64)
    x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    t = train_share.reshape(-1)
    w = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ t)
    return test_inputs @ w[:-1] + w[-1]


def softmax_rows(scores):
    """Softmax over each row (image) of `(B, T)` scores."""
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def softmax_direction_fit(tokens, target, steps=300, lr=0.05):
    """One direction `w` for the scores `x_i . w` of `(B, T, D)` tokens,
    fitted by full-batch Adam in NumPy to a cross-entropy whose gradient in
    the scores is `softmax(s) - q`: `q = target` (a `(B, T)` array whose
    rows sum to 1), or `q = target(p)` computed from the current softmax
    `p`. (The softmax is shift-free per image: no bias.)"""
    w = np.zeros(tokens.shape[-1])
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t in range(1, steps + 1):
        p = softmax_rows(tokens @ w)
        q = target(p) if callable(target) else target
        grad = np.einsum("bt,btd->d", p - q, tokens) / len(tokens)
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        w -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return w


def pointing_fit(train_inputs, train_share, test_inputs, steps=300, lr=0.05):
    """One direction fitted for the pointing game itself: maximises, over
    the training images, the log of the softmax mass of each image's scores
    on its object's tokens (any object pixel, as the pointing game counts),
    a smooth stand-in for "the peak is on the object"; Adam in NumPy, full
    batch."""
    x = train_inputs.reshape(len(train_inputs), -1, train_inputs.shape[-1])
    on = (train_share.reshape(len(train_share), -1) > 0).astype(np.float64)

    def inside_share(p):
        # d(-log inside)/ds = p - q with q the softmax renormalised on the
        # object's tokens.
        inside = (p * on).sum(axis=1, keepdims=True)
        return p * on / np.maximum(inside, 1e-12)

    return test_inputs @ softmax_direction_fit(x, inside_share, steps, lr)


def auroc(maps, share):
    """Mean over images of the AUROC of object tokens against the rest."""
    values = []
    flat_maps, flat_share = maps.reshape(len(maps), -1), share.reshape(len(share), -1)
    for m, s in zip(flat_maps, flat_share, strict=True):
        pos, neg = m[s >= OBJECT_TOKEN], m[s < OBJECT_TOKEN]
        if len(pos) and len(neg):
            greater = (pos[:, None] > neg[None, :]).mean()
            ties = (pos[:, None] == neg[None, :]).mean()
            values.append(greater + 0.5 * ties)
    return float(np.mean(values))


def scores(maps, masks, share):
    """Pointing game and AUROC of `maps`, and the mass inside after a
    min-max stretch per image (contrast-dependent; for reference)."""
    maps = np.asarray(maps, dtype=np.float64)
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    stretched = (maps - low) / np.maximum(high - low, 1e-12)
    loc = localization_scores(stretched, masks)
    return {
        "pointing_game": loc["pointing_game"],
        "auroc": auroc(maps, share),
        "mass_inside_stretched": loc["mass_inside"],
    }


def features(model, feature_layer, x):
    probe = keras.Model(model.input, feature_layer.output)
    return np.asarray(probe.predict(x, batch_size=256, verbose=0), np.float64)


def class_map(model, test_f, x):
    """`max(0, w_y . x_i)` for the class `y` that `model` predicts for `x`
    (the model's head `w`): with pooling and `Dense` after the features,
    Grad-CAM there up to a scale; for a masked model, its class map
    without the keep."""
    kernel = model.layers[-1].get_weights()[0]
    predicted = model.predict(x, batch_size=256, verbose=0).argmax(axis=-1)
    return np.maximum(np.einsum("bhwc,cb->bhw", test_f, kernel[:, predicted]), 0)


def token_forms(train_f, test_f):
    """The score forms fitted here, each as (training tokens, test tokens):
    the unit token (the keep's), the unit token and its norm over the
    image's mean (`norm_score=True`'s), and the token over its image's mean
    norm (`relative_score=True`'s). Each computed once."""
    units = unit(train_f), unit(test_f)
    return {
        "unit": units,
        "unit_and_relative_norm": tuple(
            np.concatenate([u, relative_norm(f)], -1)
            for u, f in zip(units, (train_f, test_f), strict=True)
        ),
        "relative": (relative_tokens(train_f), relative_tokens(test_f)),
    }


def all_maps(train_f, train_share, test_f, keep, cam, baseline_cam):
    forms = token_forms(train_f, test_f)
    units, unit_norm, relative = (
        forms["unit"],
        forms["unit_and_relative_norm"],
        forms["relative"],
    )
    return {
        "keep": keep,
        "cam": cam,
        "baseline_cam": baseline_cam,
        "norm": np.linalg.norm(test_f, axis=-1),
        "oracle_unit": oracle_fit(units[0], train_share, units[1]),
        "oracle_unit_norm": oracle_fit(unit_norm[0], train_share, unit_norm[1]),
        "pointing_unit": pointing_fit(units[0], train_share, units[1]),
        "pointing_relative": pointing_fit(relative[0], train_share, relative[1]),
        "oracle_raw": oracle_fit(train_f, train_share, test_f),
        "oracle_relative": oracle_fit(relative[0], train_share, relative[1]),
    }


def run_seed(seed, n_train, n_test, epochs, frozen_epochs):
    kw = dict(clutter=0.5, distractors=4, seed=seed)
    x, y, m = make_cluttered(n_train, split="train", **kw)
    xt, yt, mt = make_cluttered(n_test, split="test", **kw)
    out = {}
    # Frozen: the trained baseline's last ReLU; the frozen recipe's mask.
    baseline = quality.train(None, (x, y), seed, epochs)
    relu = baseline.layers[-3]
    grid = relu.output.shape[1]
    share, share_t = (
        object_share(m.astype(float), grid),
        object_share(mt.astype(float), grid),
    )
    keras.utils.set_random_seed(seed)
    frozen = keras_ersm.models.build_classifier(
        keras.Model(baseline.input, relu.output), 10, freeze_backbone=True
    )
    quality.fit(frozen, (x, y), frozen_epochs)
    # The frozen mask reads a frozen copy of the baseline's ReLU: the same
    # features, read once.
    f, ft = features(baseline, relu, x), features(baseline, relu, xt)
    baseline_cam = class_map(baseline, ft, xt)
    keep = next(iter(keras_ersm.models.keep_maps(frozen, xt).values()))
    cam = class_map(frozen, ft, xt)
    maps = all_maps(f, share, ft, keep, cam, baseline_cam)
    out["frozen"] = {k: scores(v, mt > 0, share_t) for k, v in maps.items()}
    out["frozen"]["accuracy"] = quality.accuracy(frozen, xt, yt)
    # From scratch: the mask's input in EnergyMask() trained end to end.
    model = quality.train(quality.VARIANTS["ersm"], (x, y), seed, epochs)
    _, feeder = quality._mask_and_input_layer(model)
    f, ft = features(model, feeder, x), features(model, feeder, xt)
    keep = next(iter(keras_ersm.models.keep_maps(model, xt).values()))
    maps = all_maps(f, share, ft, keep, class_map(model, ft, xt), baseline_cam)
    out["scratch"] = {k: scores(v, mt > 0, share_t) for k, v in maps.items()}
    out["scratch"]["accuracy"] = quality.accuracy(model, xt, yt)
    return out


def to_markdown(report):
    lines = [
        "# What the keep map's form can localise (" + report["backend"] + ")",
        "",
        f"`{report['command']}`, seeds {report['seeds']}. Mean over seeds "
        "(worst seed); pointing game and AUROC of object tokens, both "
        "independent of a map's contrast.",
        "",
        "| map | frozen: pointing | frozen: AUROC | from scratch: pointing "
        "| from scratch: AUROC |",
        "|---|---|---|---|---|",
    ]
    runs = report["runs"]
    for key, label in MAPS:
        cells = []
        for recipe in ("frozen", "scratch"):
            for metric in ("pointing_game", "auroc"):
                values = [r[recipe][key][metric] for r in runs]
                cells.append(f"{np.mean(values):.3f} ({min(values):.3f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    acc = {
        recipe: np.mean([r[recipe]["accuracy"] for r in runs])
        for recipe in ("frozen", "scratch")
    }
    lines += [
        "",
        f"Accuracy of the masked models: frozen {acc['frozen']:.1f}%, "
        f"from scratch {acc['scratch']:.1f}%.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--frozen-epochs", type=int, default=4)
    parser.add_argument("--output-dir", default=RESULTS)
    args = parser.parse_args(argv)
    start = time.time()
    runs = []
    for seed in args.seeds:
        result = run_seed(
            seed, args.n_train, args.n_test, args.epochs, args.frozen_epochs
        )
        runs.append({"seed": seed, **result})
        print(f"[seed {seed}] {time.time() - start:.0f} s", flush=True)
    report = {
        "command": f"KERAS_BACKEND={_harness.BACKEND} python -m "
        "benchmarks.score_ceiling " + " ".join(sys.argv[1:] if argv is None else argv),
        "backend": _harness.BACKEND,
        "machine": _harness.machine(),
        "seeds": args.seeds,
        "maps": dict(MAPS),
        "seconds": round(time.time() - start, 1),
        "runs": runs,
    }
    os.makedirs(args.output_dir, exist_ok=True)
    base = os.path.join(args.output_dir, f"score_ceiling_{_harness.BACKEND}")
    _harness.write_json(base + ".json", report)
    with open(base + ".md", "w") as f:
        f.write(to_markdown(report))
    print(to_markdown(report))


if __name__ == "__main__":
    main()
