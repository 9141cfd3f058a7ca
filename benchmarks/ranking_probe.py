"""What does a trained keep map rank by? Rank correlations per image.

Loads a trained classifier with an `EnergyMask` (e.g. the main job's
`runs/cifar/ersm.keras`), runs it on cluttered test images and reports,
averaged over images, the Spearman rank correlation between the keep map
and the token norm (the magnitude order), the object's share of each token,
and the neighbour redundancy. A keep map whose ranking is a monotone
function of the norm cannot beat the magnitude order in a deletion test.

    KERAS_BACKEND=jax python -m benchmarks.ranking_probe runs/cifar/ersm.keras \\
        --output benchmarks/results/ranking_probe_jax.json
"""

import argparse
import json

import keras
import numpy as np

import keras_ersm
from keras_ersm.datasets import make_cluttered


def _ranks(values):
    # Ties (e.g. tokens off the object, all 0) share their mean rank.
    from scipy.stats import rankdata  # installed with JAX

    return rankdata(values, axis=1).astype("float64")


def spearman(a, b):
    """Mean over rows of the Spearman correlation of two (B, N) arrays."""
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    valid = denominator > 0
    return float(np.mean((ra * rb).sum(axis=1)[valid] / denominator[valid]))


def probe(model, num_images=300, seed=0):
    mask = keras_ersm.models.energy_mask_layers(model)[-1]
    x, _, objects = make_cluttered(num_images, split="test", seed=seed)
    features = keras.Model(model.inputs, mask.input).predict(x, verbose=0)
    terms = mask.energy_terms(features)
    keep = keras.ops.convert_to_numpy(terms["keep"])
    redundancy = keras.ops.convert_to_numpy(terms["redundancy"])
    batch, gh, gw = keep.shape
    p = mask.patch_size
    tokens = np.asarray(features)[:, : gh * p, : gw * p]
    tokens = tokens.reshape(batch, gh, p, gw, p, -1)
    norm = np.sqrt((tokens.astype("float64") ** 2).sum(axis=(2, 4, 5)))
    height, width = objects.shape[1:]
    share = objects.reshape(batch, gh, height // gh, gw, width // gw).mean((2, 4))
    flat = {
        k: v.reshape(batch, -1)
        for k, v in dict(
            keep=keep, norm=norm, object=share, redundancy=redundancy
        ).items()
    }
    return {
        "grid": [gh, gw],
        "num_images": num_images,
        "mean_keep": float(keep.mean()),
        "zero_fraction_features": float(np.mean(np.asarray(features) == 0)),
        "spearman_keep_norm": spearman(flat["keep"], flat["norm"]),
        "spearman_keep_object": spearman(flat["keep"], flat["object"]),
        "spearman_norm_object": spearman(flat["norm"], flat["object"]),
        "spearman_keep_redundancy": spearman(flat["keep"], flat["redundancy"]),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a .keras file with an EnergyMask")
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--output", help="JSON file to write")
    args = parser.parse_args(argv)
    result = probe(keras_ersm.saving.load_model(args.model), args.num_images)
    result["model"] = args.model
    result["backend"] = keras.backend.backend()
    print(json.dumps(result, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
