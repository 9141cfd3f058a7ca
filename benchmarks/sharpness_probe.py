"""Sharpness probe: how the keep map of the quality benchmark's model sharpens
over training, and how its localization follows.

Trains the model of `benchmarks/quality.py` (one variant, one seed, the
`--quick` data and settings) one epoch at a time and prints, per epoch, one
JSON line: test accuracy, the mask's kernel norm and largest weight, its
bias, the spread of the keep logits within an image, the mean keep, the
keep's peak over its mean, and the keep's mass inside the object.

    KERAS_BACKEND=jax python -m benchmarks.sharpness_probe ersm 0
    KERAS_BACKEND=jax python -m benchmarks.sharpness_probe ersm_t05 0

Results: `benchmarks/results/sharpness_probe_jax.jsonl`; what they show is
on the Benchmarks page ("Quality").
"""

import json
import sys

import keras
import numpy as np

from benchmarks import quality
from keras_ersm.datasets import make_cluttered
from keras_ersm.evaluation.localization import localization_scores


def main(argv=None):
    variant, seed = (sys.argv[1:] if argv is None else argv)[:2]
    seed = int(seed)
    data = dict(clutter=0.5, distractors=4, seed=seed)
    xtr, ytr, _ = make_cluttered(4000, split="train", **data)
    xte, yte, objects = make_cluttered(1000, split="test", **data)
    keras.utils.set_random_seed(seed)
    model = quality.build_model(quality.VARIANTS[variant])
    mask = model.get_layer("energy_mask")
    features = keras.Model(model.input, mask.input)
    quality.fit(model, (xtr, ytr), epochs=0)  # compiles it once
    for epoch in range(8):
        model.fit(xtr, ytr, batch_size=32, epochs=1, verbose=0)
        terms = mask.energy_terms(features.predict(xte, verbose=0, batch_size=256))
        terms = {k: keras.ops.convert_to_numpy(v) for k, v in terms.items()}
        logits = (terms["scores"] / mask.temperature).reshape(len(xte), -1)
        keep = terms["keep"].reshape(len(xte), -1)
        kernel = keras.ops.convert_to_numpy(mask.kernel)[:, 0]
        accuracy = model.evaluate(xte, yte, verbose=0)[1]
        record = {
            "variant": variant,
            "seed": seed,
            "epoch": epoch,
            "accuracy": round(100 * accuracy, 1),
            "kernel_norm": float(np.linalg.norm(kernel)),
            "kernel_max": float(np.abs(kernel).max()),
            "bias": float(keras.ops.convert_to_numpy(mask.bias)),
            "logit_std_in_image": float(logits.std(axis=1).mean()),
            "keep_mean": float(keep.mean()),
            "keep_peak_over_mean": float((keep.max(1) / keep.mean(1)).mean()),
            "keep_mass_inside": localization_scores(terms["keep"], objects > 0)[
                "mass_inside"
            ],
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
