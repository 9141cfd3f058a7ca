"""Exploration: does deleting the lowest-keep tokens in training help the ranking?

Ordered dropout on the keep ranking (the "ranking and localization" work):
in training only, each image drops its lowest-keep tokens, a fraction drawn
uniformly from `[0, max_drop]`, before the kept map is rescaled, so the head
must classify from the top-k kept tokens for any k and the task gradient
teaches the scoring kernel which tokens belong at the top. Inference is the
plain `EnergyMask`. The layer here is an exploration subclass, not library
API. Same model, data, training and evaluation as
`python -m benchmarks.quality --quick` (so its numbers compare with
`benchmarks/results/quality_jax.json`):

    KERAS_BACKEND=jax python -m benchmarks.ranking_explore --max-drop 0.9
"""

import argparse
import json
import os
import sys
import time

import keras
import numpy as np
from keras import ops

import keras_ersm
from benchmarks import quality
from keras_ersm.datasets import make_cluttered


class RankDropMask(keras_ersm.EnergyMask):
    """`EnergyMask` that, in training, zeroes each image's lowest-keep tokens."""

    def __init__(self, max_drop=0.9, **kwargs):
        super().__init__(**kwargs)
        self.max_drop = max_drop
        self.drop_seed = keras.random.SeedGenerator(0)

    def call(self, inputs, training=None):
        with_energy = self.energy_regularizer is not None
        terms = self._compute_terms(inputs, for_energy=with_energy)
        if with_energy:
            self.add_loss(self._energy_loss(terms))
        keep = terms["keep"]
        if training:
            shape = ops.shape(keep)
            flat = ops.reshape(keep, (shape[0], -1))
            count = flat.shape[1]
            fraction = keras.random.uniform(
                (shape[0], 1), 0.0, self.max_drop, seed=self.drop_seed
            )
            ranks = ops.argsort(ops.argsort(flat, axis=1), axis=1)  # 0: lowest
            dropped = ops.cast(ranks, "float32") < fraction * count
            keep = ops.reshape(ops.where(dropped, 0.0, flat), shape)
        return self.apply_keep(inputs, keep)


def train(max_drop, data, seed, epochs):
    keras.utils.set_random_seed(seed)
    model = quality.build_model(None)
    # The same model with the mask before pooling.
    features = model.layers[-3].output
    masked = RankDropMask(max_drop=max_drop, name="energy_mask")(features)
    pooled = keras.layers.GlobalAveragePooling2D()(masked)
    model = keras.Model(model.inputs, keras.layers.Dense(10)(pooled))
    return quality.fit(model, data, epochs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-drop", type=float, default=0.9)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    runs = []
    for seed in args.seeds:
        kw = dict(clutter=0.5, distractors=4, seed=seed)
        xtr, ytr, _ = make_cluttered(4000, split="train", **kw)
        test = make_cluttered(1000, split="test", **kw)
        start = time.time()
        model = train(args.max_drop, (xtr, ytr), seed, args.epochs)
        result = quality.evaluate(model, test, True, seed)
        result["seconds"] = round(time.time() - start, 1)
        runs.append(quality.flatten("", result, {}))
        print(json.dumps({"seed": seed, **runs[-1]}), flush=True)
    keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float))]
    summary = {
        k: {
            "mean": float(np.mean([r[k] for r in runs])),
            "std": float(np.std([r[k] for r in runs])),
        }
        for k in keys
    }
    report = {
        "command": "python -m benchmarks.ranking_explore "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "backend": keras.backend.backend(),
        "max_drop": args.max_drop,
        "seeds": args.seeds,
        "runs": runs,
        "summary": summary,
    }
    output = args.output or os.path.join(
        quality.RESULTS,
        f"ranking_explore_drop{args.max_drop:g}_{keras.backend.backend()}.json",
    )
    with open(output, "w") as f:
        json.dump(report, f, indent=2)
    for k in sorted(summary):
        print(f"{k}: {summary[k]['mean']:.3f} ± {summary[k]['std']:.3f}")


if __name__ == "__main__":
    main()
