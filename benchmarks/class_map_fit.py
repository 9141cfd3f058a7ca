"""Can a score of the keep's form imitate the model's class map?

The class-map signal (`align_weight`, benchmarks/_experimental.py) trains
the keep logits' softmax over an image's tokens toward the predicted
class's map, normalised to sum to 1. This fits the same objective directly
(cross-entropy, Adam in NumPy, full batch, no task and no energy) on the
frozen recipe's features (the trained baseline's last ReLU), with the
baseline's own class map as the target, for three score forms: one
direction on the unit token (the keep's form), the unit token plus its
norm over the image's mean (`norm_score=True`'s form), and the token over
its image's mean norm (`relative_score=True`'s form). Each fit is scored
on the test images by pointing game and per-image AUROC
(`benchmarks/score_ceiling.py`). If the fit of a form points little better
than the trained keep, the form, not the training, is what the signal
cannot overcome (docs/benchmarks.md, "A second signal for the ranking").

Usage:

    KERAS_BACKEND=jax python -m benchmarks.class_map_fit --seeds 0

Writes `benchmarks/results/class_map_fit_<backend>.json`.
"""

import argparse
import os
import sys
import time

import numpy as np

from benchmarks import _harness, quality
from benchmarks import score_ceiling as sc
from keras_ersm.datasets import make_cluttered


def ce_fit(inputs, target, test_inputs, steps=300, lr=0.05):
    """One direction `w` minimising the mean cross-entropy of
    `softmax_i(x_i . w)` against `target` (per image, summing to 1).

    Returns the test scores `test_inputs @ w`, the training cross-entropy
    and `||w||`."""
    x = inputs.reshape(len(inputs), -1, inputs.shape[-1])
    q = target.reshape(len(target), -1)
    w = sc.softmax_direction_fit(x, q, steps, lr)
    ce = float(-(q * np.log(sc.softmax_rows(x @ w) + 1e-12)).sum(axis=1).mean())
    return test_inputs @ w, ce, float(np.linalg.norm(w))


def run_seed(seed, n_train, n_test, epochs):
    kw = dict(clutter=0.5, distractors=4, seed=seed)
    x, y, _ = make_cluttered(n_train, split="train", **kw)
    xt, _, mt = make_cluttered(n_test, split="test", **kw)
    baseline = quality.train(None, (x, y), seed, epochs)
    relu = baseline.layers[-3]
    share_t = sc.object_share(mt.astype(float), relu.output.shape[1])
    f, ft = sc.features(baseline, relu, x), sc.features(baseline, relu, xt)
    cam, cam_t = sc.class_map(baseline, f, x), sc.class_map(baseline, ft, xt)
    target = cam / np.maximum(cam.sum(axis=(1, 2), keepdims=True), 1e-12)
    forms = sc.token_forms(f, ft)
    out = {
        "seed": seed,
        "baseline_class_map": sc.scores(cam_t, mt > 0, share_t),
        "ce_uniform": float(np.log(target[0].size)),
    }
    for name, (train_in, test_in) in forms.items():
        maps, ce, w_norm = ce_fit(train_in, target, test_in)
        out[name] = {
            **sc.scores(maps, mt > 0, share_t),
            "train_ce": ce,
            "w_norm": w_norm,
        }
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--output-dir", default=quality.RESULTS)
    args = parser.parse_args(argv)
    start = time.time()
    runs = [run_seed(s, args.n_train, args.n_test, args.epochs) for s in args.seeds]
    report = {
        "command": f"KERAS_BACKEND={_harness.BACKEND} python -m "
        "benchmarks.class_map_fit " + " ".join(sys.argv[1:] if argv is None else argv),
        "backend": _harness.BACKEND,
        "machine": _harness.machine(),
        "seconds": round(time.time() - start, 1),
        "runs": runs,
    }
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, f"class_map_fit_{_harness.BACKEND}.json")
    _harness.write_json(path, report)
    for run in runs:
        print(
            run["seed"],
            {
                k: round(v["pointing_game"], 3)
                for k, v in run.items()
                if isinstance(v, dict)
            },
        )
    print("wrote", path)


if __name__ == "__main__":
    main()
