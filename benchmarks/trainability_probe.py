"""Per-epoch probe of one trainability run: what the mask does to a backbone.

Trains one run of the trainability matrix (`benchmarks/trainability.py`:
one cell, seed and variant, on the benchmark's images for the backbone and
dataset, for 12 epochs unless `--epochs` says otherwise) and prints, after
every epoch, one JSON line:

- `zeros`, `feat_mean`: the fraction of exactly-zero activations at the
  mask's input and their mean, on 256 test images;
- `keep`, `eff_tokens`: the mean keep, and the participation ratio of each
  image's keep map normalised to sum 1, divided by the number of tokens
  (1: every token weighted alike, 1/N: one token);
- `alive_tokens`, `keep_on_alive`: the fraction of tokens with a non-zero
  channel, and the share of each image's normalised keep on them (equal
  to `alive_tokens` for a uniform keep);
- `bias`, `w_norm`, `w_dot_mean`: the mask's bias, the norm of its scoring
  kernel, and the kernel's projection on the mean direction of the unit
  tokens. On ReLU features every unit token lies in the positive orthant,
  so a growing `w_dot_mean` scores every non-empty token above the empty
  ones (whose score is the bias alone).
- `score_mean`, `redundancy_mean`, `redundancy_p10`: the mask's scores `z`
  and redundancy `S` (`keras_ersm.models.energy_terms`);
- `energy_raises_keep`: the fraction of tokens where the energy's own
  gradient lowers `z`, i.e. raises the keep (the unary term
  keep * softplus(z) is not monotone in `z`; `benchmarks/energy_probe.py`).

These numbers found the mechanism described in docs/concepts.md
("Trainability"). Usage:

    KERAS_BACKEND=jax python -m benchmarks.trainability_probe \\
        --backbone plain_cnn --optimizer adam --dataset hard \\
        --variant default --seed 1
"""

import argparse
import json

import keras
import numpy as np

import keras_ersm
from benchmarks import trainability


def _mask_stats(model, mask, features):
    maps = keras_ersm.models.keep_maps(model, features["x"])
    if isinstance(maps, dict):
        maps = list(maps.values())[0]
    keep = np.asarray(maps).reshape(len(features["x"]), -1)
    weights = keep / (keep.sum(axis=1, keepdims=True) + 1e-12)
    participation = trainability.flatness(keep)
    kernel = keras.ops.convert_to_numpy(mask.kernel)[:, 0]
    # Alive tokens (any non-zero channel) and the share of each image's
    # normalised keep that lands on them (patch size 1: one token a position).
    alive = np.abs(features["f"]).reshape(len(keep), -1, features["f"].shape[-1])
    alive = alive.max(axis=-1) > 0
    f = features["f"].reshape(-1, features["f"].shape[-1])
    unit = f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-6)
    direction = unit.mean(axis=0)
    direction /= np.linalg.norm(direction) + 1e-12
    return {
        "keep": float(keep.mean()),
        "alive_tokens": float(alive.mean()),
        "keep_on_alive": float((weights * alive).sum(axis=1).mean()),
        "eff_tokens": float(participation.mean()),
        "bias": float(np.mean(keras.ops.convert_to_numpy(mask.bias))),
        "w_norm": float(np.linalg.norm(kernel)),
        "w_dot_mean": float(kernel @ direction),
        # `norm_score=True`'s weight `a` (negative: high-norm tokens kept)
        # and the correlation of the keep with the token norm over tokens.
        "norm_weight": (
            None
            if mask.norm_weight is None
            else float(keras.ops.convert_to_numpy(mask.norm_weight))
        ),
        "keep_norm_corr": float(
            np.corrcoef(keep.ravel(), np.linalg.norm(f, axis=1))[0, 1]
        ),
    }


def _energy_stats(model, mask, x):
    terms = {
        k: np.asarray(v, "float64")
        for k, v in keras_ersm.models.energy_terms(model, x, layer=mask).items()
    }
    z, keep, energy = terms["scores"], terms["keep"], terms["energy"]
    t = float(mask.temperature)
    # d(keep * E)/dz: the keep's slope times E, plus keep times dE/dz (the
    # latter scaled by `energy_score_gradient`; dE/dz = lambda sigmoid(z)).
    grad = -keep * (1.0 - keep) / t * energy + mask.energy_score_gradient * (
        keep * mask.energy_regularizer.unary / (1.0 + np.exp(-z))
    )
    return {
        "score_mean": float(z.mean()),
        "redundancy_mean": float(terms["redundancy"].mean()),
        "redundancy_p10": float(np.percentile(terms["redundancy"], 10)),
        "energy_raises_keep": float(np.mean(grad > 0)),
    }


def probe(
    backbone,
    optimizer,
    dataset,
    variant,
    seed,
    epochs=12,
    train_size=None,
):
    """Trains one run and returns the per-epoch records and the test accuracy.

    `train_size` None trains on the benchmark's images for the backbone and
    dataset (`trainability.train_size_for`)."""
    (x, y), (xt, yt), num_classes = trainability.run_data(
        backbone, dataset, {"train_size": train_size}
    )
    model, probe_name = trainability.build(backbone, variant, num_classes, seed)
    feature_model = keras.Model(model.inputs, model.get_layer(probe_name).output)
    masks = keras_ersm.models.energy_mask_layers(model)
    probe_x = xt[:256]
    records = []

    def record(epoch, logs=None):
        f = np.asarray(feature_model.predict(probe_x, batch_size=256, verbose=0))
        row = {
            "epoch": epoch,
            "zeros": float(np.mean(f == 0.0)),
            "feat_mean": float(f.mean()),
        }
        row.update({k: float(v) for k, v in (logs or {}).items()})
        if masks:
            row.update(_mask_stats(model, masks[0], {"x": probe_x, "f": f}))
            if masks[0].energy_regularizer is not None:
                row.update(_energy_stats(model, masks[0], probe_x))
        records.append(row)
        print(json.dumps(row), flush=True)

    record(-1)
    trainability.compile_model(model, optimizer)
    model.fit(
        x,
        y,
        batch_size=trainability.BATCH_SIZE,
        epochs=epochs,
        verbose=0,
        callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=record)],
    )
    accuracy = 100.0 * float(model.evaluate(xt, yt, batch_size=256, verbose=0)[1])
    return records, accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backbone", default="plain_cnn", choices=trainability.BACKBONES
    )
    parser.add_argument("--optimizer", default="adam", choices=trainability.OPTIMIZERS)
    parser.add_argument("--dataset", default="hard", choices=trainability.DATASETS)
    parser.add_argument("--variant", default="default", choices=trainability.VARIANTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=trainability.positive_int, default=12)
    parser.add_argument(
        "--train-size",
        type=trainability.positive_int,
        help="training images (default: the benchmark's for the backbone)",
    )
    args = parser.parse_args(argv)
    _, accuracy = probe(
        args.backbone,
        args.optimizer,
        args.dataset,
        args.variant,
        args.seed,
        args.epochs,
        args.train_size,
    )
    print(
        json.dumps(
            {"variant": args.variant, "seed": args.seed, "test_accuracy": accuracy}
        )
    )


if __name__ == "__main__":
    main()
