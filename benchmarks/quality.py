"""Quality benchmark: does ERSM deliver its claims on the bundled benchmark?

For each seed it trains, from scratch and with identical settings, the same
small CNN without a mask (baseline), with the library's default EnergyMask
(reference ERSM, `coherence_steps=0`) and with the coherent variant, on the
bundled cluttered benchmark (`keras_ersm.datasets.make_cluttered`), and
measures: clean accuracy; accuracy under 25% patch occlusion and under
object occlusion; deletion AUC for the energy, kept, magnitude, random and
Grad-CAM orders; mean keep and active fraction; localization (keep mass
inside the object, pointing game, IoU) against Grad-CAM; and the
spurious-cue split (trained with a background colour tied to the label,
tested without it). Mean and standard deviation over seeds go to JSON,
Markdown and plots.

Usage:

    KERAS_BACKEND=jax python -m benchmarks.quality --quick
    KERAS_BACKEND=jax python -m benchmarks.quality --seeds 0 1 2 --epochs 10
"""

import argparse
import json
import os
import sys
import time

import keras
import numpy as np

import keras_ersm
from benchmarks import _experimental, _harness, trainability
from keras_ersm import evaluation
from keras_ersm.datasets import make_cluttered
from keras_ersm.evaluation.localization import localization_scores, normalise_peak

RESULTS = os.path.join(os.path.dirname(__file__), "results")

# name -> EnergyMask kwargs; None is the baseline, "paper" EnergyMask.paper().
# `ersm` is `EnergyMask()`; since session 6 its energy is a price per token
# (`energy_score_gradient=0.0`). The variants measured before that pin the
# previous `energy_score_gradient=1.0`, so a rerun reproduces their files in
# results/ (`ersm` in files older than session 6 is `ersm_reference_energy`).
# Likewise since session 9 the scoring kernel starts as Glorot uniform at a
# tenth of its range; every variant measured before pins "glorot_uniform"
# (`ersm` in files older than session 9 is `ersm_glorot`).
# The pins are the trainability benchmark's, one definition for both.
_REFERENCE_ENERGY = trainability._REFERENCE_ENERGY
_GLOROT = trainability._GLOROT
VARIANTS = {
    "baseline": None,
    "ersm": {},
    # `ersm` with the coherent extension: follows the default (its columns
    # in files older than session 9 had the Glorot kernel).
    "ersm_coherent": {"coherence_steps": 2},
    # The default of sessions 6-8 (docs/concepts.md, "Trainability").
    "ersm_glorot": dict(_GLOROT),
    # The default until session 6 (docs/concepts.md, "Trainability").
    "ersm_reference_energy": {**_REFERENCE_ENERGY, **_GLOROT},
    "ersm_t05": {"temperature": 0.5, **_REFERENCE_ENERGY, **_GLOROT},
    # The energy trains the bias, not the ranking (docs/concepts.md,
    # "Trainability").
    "ersm_kernel_stop": {"energy_kernel_gradient": 0.0, **_REFERENCE_ENERGY, **_GLOROT},
    # The energy as a fixed price per token, the default since session 6
    # (benchmarks/trainability.py "default"); results/quality_price_jax.*.
    "ersm_price": {"energy_score_gradient": 0.0, **_GLOROT},
    # Starts sparse (keep sigmoid(-3) = 0.047, what the energy reaches from
    # scratch), so the frozen recipe's few hundred Adam steps go to the
    # ranking rather than to moving the bias from 0.
    "ersm_bias3": {
        "bias_initializer": keras.initializers.Constant(3.0),
        **_REFERENCE_ENERGY,
        **_GLOROT,
    },
    # Starts from no ranking at all (every score equal), so the task, not
    # the random initial kernel, orders the tokens.
    "ersm_kernel0": {"kernel_initializer": "zeros", **_REFERENCE_ENERGY},
    # benchmarks/_experimental.py, not in the library: a score term that
    # compares each token with the image's mean token.
    "ersm_context": {
        "experimental": True,
        "context": True,
        **_REFERENCE_ENERGY,
        **_GLOROT,
    },
    # `EnergyMask(norm_score=True)` (session 7): a score term in the token's
    # norm relative to the image's mean token norm. results/
    # quality_norm_score_jax.* ran on a first copy of it in
    # benchmarks/_experimental.py that divided by `mean + 1e-6` instead of
    # `mean` (the same up to float rounding).
    # The default's energy without its pairwise (redundancy) term, and with
    # it ten times stronger: does the redundancy price push the keep off the
    # object's interior, whose neighbouring tokens are alike? (issue 13)
    "ersm_no_pairwise": {
        "energy_regularizer": keras_ersm.regularizers.EnergyRegularizer(1e-2, 0.0)
    },
    "ersm_pairwise10": {
        "energy_regularizer": keras_ersm.regularizers.EnergyRegularizer(1e-2, 1e-2)
    },
    # Scores on each token over its image's mean token norm (issue 13).
    "ersm_relative_score": {"experimental": True, "relative_score": True},
    # The default layer whose scores also learn to order the tokens as the
    # model's own class map does (`align_weight`, benchmarks/_experimental.py;
    # issue 13, session 17).
    "ersm_align1": {"experimental": True, "align_weight": 1.0},
    "ersm_align01": {"experimental": True, "align_weight": 0.1},
    "ersm_align10": {"experimental": True, "align_weight": 10.0},
    # The same signal on the two score forms that see the token's norm
    # (benchmarks/score_ceiling.py: in the frozen recipe they localise where
    # the unit token cannot): the image-relative token, and the unit token
    # plus the relative norm.
    "ersm_relative_align1": {
        "experimental": True,
        "relative_score": True,
        "align_weight": 1.0,
    },
    "ersm_norm_init_bias1_align1": {
        "experimental": True,
        **trainability.VARIANTS["norm_init_neg1_bias1"],
        "align_weight": 1.0,
    },
    "ersm_norm_score": {"norm_score": True, **_GLOROT},
    # The same with today's default kernel (session 9).
    "ersm_default_norm_score": {"norm_score": True},
    # `norm_score=True` with the norm weight starting at -1, a magnitude
    # prior the training then moves (session 10).
    "ersm_norm_init": {"norm_score": True, "norm_init": -1.0},
    "ersm_norm_init025": {"norm_score": True, "norm_init": -0.25},
    # The strong prior with the keep starting at sigmoid(-1) = 0.27 and
    # sigmoid(-0.5) = 0.38 for a token of mean norm: the trainability
    # variants of the same names (session 11).
    "ersm_norm_init_bias1": trainability.VARIANTS["norm_init_neg1_bias1"],
    "ersm_norm_init_bias05": trainability.VARIANTS["norm_init_neg1_bias05"],
    "paper": "paper",
}


# Frozen-recipe variants whose head starts as the trained baseline's (its
# `Dense` weights copied), the mask as the named variant's: with a head that
# already classifies, the task gradient on each token's keep is its class
# evidence from the first step (a head warm-up, issue 13).
TRAINED_HEAD = {
    "ersm_trained_head": "ersm",
    "ersm_norm_init_bias1_trained_head": "ersm_norm_init_bias1",
}


def build_model(
    mask_kwargs, image_size=32, num_classes=10, batchnorm=True, bn_momentum=0.9
):
    """Four conv(+BN)+ReLU layers (stride 4 in all), mask, GAP, Dense.

    `mask_kwargs`: EnergyMask kwargs, `"paper"` for `EnergyMask.paper()`, or
    `None` for no mask (the baseline).
    """
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for filters, strides in ((32, 1), (32, 2), (64, 1), (64, 2)):
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same")(x)
        if batchnorm:
            # Momentum 0.9, not Keras' 0.99: in runs this short the moving
            # statistics of 0.99 lag the weights, which cost the baseline (but
            # not the rescaled ERSM model) up to 20 points of test accuracy.
            x = keras.layers.BatchNormalization(momentum=bn_momentum)(x)
        x = keras.layers.Activation("relu")(x)
    mask = None
    if mask_kwargs == "paper":
        x = keras_ersm.EnergyMask.paper(name="energy_mask")(x)
    elif mask_kwargs is not None and mask_kwargs.get("experimental"):
        kwargs = {k: v for k, v in mask_kwargs.items() if k != "experimental"}
        mask = _experimental.ExperimentalMask(name="energy_mask", **kwargs)
        x = mask(x)
    elif mask_kwargs is not None:
        x = keras_ersm.EnergyMask(name="energy_mask", **mask_kwargs)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    head = keras.layers.Dense(num_classes)
    outputs = head(x)
    if mask is not None:
        mask.attach_head(head)
    return keras.Model(inputs, outputs)


def fit(model, data, epochs, batch_size=32, learning_rate=2e-3):
    """The benchmark's training: Adam, cross-entropy, jit where it jits."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=keras.backend.backend() != "torch",
    )
    x, y = data
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    return model


def train(mask_kwargs, data, seed, epochs, batch_size=32, learning_rate=2e-3):
    keras.utils.set_random_seed(seed)
    return fit(build_model(mask_kwargs), data, epochs, batch_size, learning_rate)


def frozen_recipe(baseline, train_data, test, seed, epochs, variants=("ersm", "paper")):
    """The paper's recipe: the trained baseline's conv stack, frozen, then
    (mask ->) GAP -> Dense trained on top; without the mask and with each of
    `variants` (names of `VARIANTS`)."""
    features = baseline.layers[-3].output  # the last ReLU, before GAP
    results = {}
    for name, kwargs in (
        ("frozen_baseline", None),
        *((f"frozen_{v}", VARIANTS[TRAINED_HEAD.get(v, v)]) for v in variants),
    ):
        keras.utils.set_random_seed(seed)
        backbone = keras.Model(baseline.input, features)
        if isinstance(kwargs, dict) and kwargs.get("experimental"):
            # A copy, so freezing it leaves the trained baseline as it is.
            copy = keras.models.clone_model(backbone)
            copy.set_weights(backbone.get_weights())
            copy.trainable = False
            mask_kwargs = {k: v for k, v in kwargs.items() if k != "experimental"}
            model = _experimental.build_classifier(copy, 10, **mask_kwargs)
        else:
            if kwargs == "paper":
                mask_kwargs = {"mask_at": "output", **EnergyMaskPaperKwargs()}
            elif kwargs is None:
                mask_kwargs = {"mask_at": None}
            else:
                mask_kwargs = {"mask_at": "output", **kwargs}
            model = keras_ersm.models.build_classifier(
                backbone, 10, freeze_backbone=True, **mask_kwargs
            )
        if name.removeprefix("frozen_") in TRAINED_HEAD:
            model.layers[-1].set_weights(baseline.layers[-1].get_weights())
        fit(model, train_data, epochs)
        results[name] = evaluate(model, test, kwargs is not None, seed)
    return results


def EnergyMaskPaperKwargs():
    """EnergyMask.paper()'s settings as keyword arguments."""
    config = keras_ersm.EnergyMask.paper().get_config()
    keys = (
        "temperature",
        "bias",
        "kernel_initializer",
        "bias_initializer",
        "coherence_steps",
        "energy_regularizer",
        "rescale",
        "energy_score_gradient",
    )
    return {k: config[k] for k in keys}


def accuracy(model, x, y):
    return 100.0 * float(model.evaluate(x, y, verbose=0, batch_size=256)[1])


def occlude_object_part(x, masks, seed):
    """Hides the object's pixels in one random half (top, bottom, left or
    right) of its bounding box, filled with the dataset mean colour."""
    rng = np.random.default_rng(seed)
    out = x.copy()
    fill = x.mean(axis=(0, 1, 2))
    h, w = masks.shape[1:]
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    for i, side in enumerate(rng.integers(0, 4, len(x))):
        ys, xs = np.nonzero(masks[i])
        if len(ys) == 0:
            continue
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        half = [rows < cy, rows >= cy, cols < cx, cols >= cx][side]
        out[i][(masks[i] > 0) & half] = fill
    return out


def evaluate(model, test, has_mask, seed):
    """The benchmark's numbers of one model, from `keras_ersm.evaluation.evaluate`
    (deletion, mask statistics and localization for masked models only)."""
    x, y, masks = test
    result = evaluation.evaluate(
        model,
        (x, y),
        object_masks=masks,
        orders=None if has_mask else (),
        occlusion={"patch_sizes": (16,), "fractions": (0.25,), "hide_sizes": ()},
        steps=17,
        num_examples=0,
        batch_size=128,
        seed=seed,
    )
    out = {"accuracy": result.clean_accuracy}
    occluded = occlude_object_part(x, masks, seed)
    out["object_part_occlusion"] = accuracy(model, occluded, y)
    out["occlusion"] = dict(result.occlusion.accuracy)
    # Without a mask: Grad-CAM at the last 4-D layer, the last ReLU.
    out["localization"] = result.localization.to_dict()
    if not has_mask:
        return out
    out["deletion_auc"] = dict(result.deletion.auc)
    morf = evaluation.deletion_curve(
        model, (x, y), direction="morf", steps=17, batch_size=128, seed=seed
    )
    out["deletion_auc_morf"] = dict(morf.auc)
    out["mask"] = result.mask_statistics.to_dict()
    # Grad-CAM at the mask's output is keep x CAM (the gradient of a GAP +
    # Dense head is the same at every position), so it contains the keep
    # map. Two maps of the same model without it: Grad-CAM at the mask's
    # input (its gradient still passes through the scores into the keep)
    # and the exact class activation map of the mask's input,
    # relu(w_y . x_i) for the predicted class y (docs/benchmarks.md,
    # "Quality").
    mask, source = _mask_and_input_layer(model)
    cam = evaluation.grad_cam(model, x, layer=source, batch_size=128)
    out["localization"]["scores"]["grad_cam_input"] = localization_scores(
        normalise_peak(cam), masks > 0
    )
    features = keras.Model(model.input, mask.input).predict(
        x, batch_size=128, verbose=0
    )
    dense = model.layers[-1]
    if not isinstance(dense, keras.layers.Dense):
        raise ValueError(f"Expected a Dense head. Received: {dense.name!r}")
    weights = keras.ops.convert_to_numpy(dense.kernel)
    classes = model.predict(x, batch_size=128, verbose=0).argmax(axis=1)
    class_map = np.maximum(np.einsum("bhwc,cb->bhw", features, weights[:, classes]), 0)
    out["localization"]["scores"]["cam_input"] = localization_scores(
        normalise_peak(class_map), masks > 0
    )
    # The class-agnostic cue the scores cannot see: they read the tokens
    # normalised, so a token's magnitude ||x_i|| never reaches its keep.
    norms = np.linalg.norm(features, axis=-1)
    out["localization"]["scores"]["magnitude_input"] = localization_scores(
        normalise_peak(norms), masks > 0
    )
    # What the mask lets through, keep_i * ||x_i||, is the library's "kept"
    # map (in `result.localization`, and its deletion order in the AUCs).
    return out


def _mask_and_input_layer(model):
    """The model's `EnergyMask` and the layer whose output it reads."""
    masks = [
        layer for layer in model.layers if isinstance(layer, keras_ersm.EnergyMask)
    ]
    if len(masks) != 1:
        raise ValueError(f"Expected one EnergyMask. Received: {len(masks)}")
    mask = masks[0]
    for layer in model.layers:
        if layer.output is mask.input:
            return mask, layer
    raise ValueError(f"No layer of the model feeds {mask.name!r}")


def flatten(prefix, value, into):
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}/{k}" if prefix else str(k), v, into)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        into[prefix] = float(value)
    return into


def summarize(runs):
    """variant -> metric -> {mean, std, n} over seeds."""
    summary = {}
    for variant, per_seed in runs.items():
        flat = [flatten("", r, {}) for r in per_seed]
        keys = sorted(set().union(*flat))
        summary[variant] = {
            k: {
                "mean": float(np.mean([f[k] for f in flat if k in f])),
                "std": float(np.std([f[k] for f in flat if k in f])),
                "n": sum(k in f for f in flat),
            }
            for k in keys
        }
    return summary


def _summary_mean(d, k):
    """The mean of metric `k` in one variant's summary, NaN if absent."""
    return d.get(k, {}).get("mean", float("nan"))


def claims(summary, variant):
    """The issue-9 claims for one ERSM variant against its baseline."""
    base = "frozen_baseline" if variant.startswith("frozen_") else "baseline"
    s, b = summary[variant], summary[base]
    m = _summary_mean
    auc = {o: m(s, f"deletion_auc/{o}") for o in ("energy", "magnitude", "random")}
    keys = [k for k in s if k.startswith("occlusion/cutout") and k.endswith("_25pct")]
    patch_key = keys[0] if keys else None
    obj_key = "occlusion/object" if "occlusion/object" in s else None
    mass = m(s, "localization/scores/keep/mass_inside")
    area = m(s, "localization/object_fraction")
    rows = [
        (
            "accuracy within 1 point of baseline",
            m(s, "accuracy") >= m(b, "accuracy") - 1.0,
            f"{m(s, 'accuracy'):.1f} vs {m(b, 'accuracy'):.1f}",
        ),
        (
            "mean keep < 0.5",
            m(s, "mask/mean_keep") < 0.5,
            f"{m(s, 'mask/mean_keep'):.3f}",
        ),
        (
            "keep varies across images (spread > 0.01)",
            m(s, "mask/spread") > 0.01,
            f"{m(s, 'mask/spread'):.3f}",
        ),
    ]
    if patch_key:
        rows.append(
            (
                "25% patch occlusion above baseline",
                m(s, patch_key) > m(b, patch_key),
                f"{m(s, patch_key):.1f} vs {m(b, patch_key):.1f}",
            )
        )
    part = "object_part_occlusion"
    rows.append(
        (
            "object-part occlusion above baseline",
            m(s, part) > m(b, part),
            f"{m(s, part):.1f} vs {m(b, part):.1f}",
        )
    )
    if obj_key:
        rows.append(
            (
                "whole-object occlusion above baseline (both near chance)",
                m(s, obj_key) > m(b, obj_key),
                f"{m(s, obj_key):.1f} vs {m(b, obj_key):.1f}",
            )
        )
    rows.append(
        (
            "deletion AUC energy > magnitude > random",
            auc["energy"] > auc["magnitude"] > auc["random"],
            " / ".join(f"{auc[o]:.1f}" for o in ("energy", "magnitude", "random")),
        )
    )
    rows.append(
        (
            "keep mass in object >= 2x object area",
            mass >= 2 * area,
            f"{mass:.3f} vs 2 x {area:.3f}",
        )
    )
    return rows + ranking_claims(s, b)


def ranking_claims(s, b):
    """The "ranking and localization" claims: the keep map against the
    magnitude and against Grad-CAM of the same model (at the mask's input,
    and at its output, which is keep x CAM) and of the baseline."""
    m = _summary_mean
    lerf = {o: m(s, f"deletion_auc/{o}") for o in ("energy", "magnitude", "grad_cam")}
    morf = {
        o: m(s, f"deletion_auc_morf/{o}") for o in ("energy", "magnitude", "grad_cam")
    }
    rows = []
    # The keep's order (energy) and, since session 7, what the mask lets
    # through (kept: keep x token norm, `keras_ersm.evaluation`'s "kept").
    for order in ("energy", "kept"):
        mine = m(s, f"deletion_auc/{order}")
        mine_morf = m(s, f"deletion_auc_morf/{order}")
        if mine != mine:  # not measured in this run (NaN)
            continue
        rows += [
            (
                f"LeRF AUC: {order} > magnitude and >= Grad-CAM",
                mine > lerf["magnitude"] and mine >= lerf["grad_cam"],
                " / ".join(f"{v:.1f}" for v in (mine, *list(lerf.values())[1:])),
            ),
            (
                f"MoRF AUC: {order} < magnitude and < Grad-CAM",
                mine_morf < morf["magnitude"] and mine_morf < morf["grad_cam"],
                " / ".join(f"{v:.1f}" for v in (mine_morf, *list(morf.values())[1:])),
            ),
        ]
    key = "localization/scores/{}/{}"
    for metric in ("mass_inside", "pointing_game"):
        keep = m(s, key.format("keep", metric))
        for label, d, name in (
            ("the class map (CAM) of the mask's input", s, "cam_input"),
            ("Grad-CAM at the mask's input", s, "grad_cam_input"),
            ("Grad-CAM at the mask's output (keep x CAM)", s, "grad_cam"),
            ("the baseline's Grad-CAM", b, "grad_cam"),
        ):
            other = m(d, key.format(name, metric))
            if other != other:  # not measured in this run (NaN)
                continue
            rows.append(
                (
                    f"keep {metric} >= {label}",
                    keep >= other,
                    f"{keep:.3f} vs {other:.3f}",
                )
            )
    # The class-agnostic maps beside the keep: the magnitude of the mask's
    # input and what the mask lets through (keep x magnitude: "kept" from
    # `keras_ersm.evaluation` since session 7, computed here as
    # "keep_x_magnitude" before), against the baseline's Grad-CAM.
    for metric in ("mass_inside", "pointing_game"):
        other = m(b, key.format("grad_cam", metric))
        for name in ("magnitude_input", "keep_x_magnitude", "kept"):
            mine = m(s, key.format(name, metric))
            if mine != mine or other != other:
                continue
            rows.append(
                (
                    f"{name} {metric} >= the baseline's Grad-CAM",
                    mine >= other,
                    f"{mine:.3f} vs {other:.3f}",
                )
            )
    return rows


def to_markdown(report):
    lines = [
        "# Quality benchmark",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']['processor']}, "
        f"{report['machine']['cpu_count']} cores, "
        f"backend {report['machine']['backend']}; seeds {report['seeds']}; "
        f"{report['n_train']} training / {report['n_test']} test images, "
        f"{report['epochs']} epochs. Mean ± std over seeds.",
        "",
    ]
    summary = report["summary"]
    variants = list(summary)
    metrics = sorted(set().union(*[set(summary[v]) for v in variants]))
    lines.append("| metric | " + " | ".join(variants) + " |")
    lines.append("|---" * (len(variants) + 1) + "|")
    for k in metrics:
        cells = []
        for v in variants:
            d = summary[v].get(k)
            cells.append("" if d is None else f"{d['mean']:.3g} ± {d['std']:.2g}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    for v in variants:
        if v.endswith("baseline") or v not in report.get("claims", {}):
            continue
        lines += [
            "",
            f"## Claims for `{v}`",
            "",
            "| claim | met | measured |",
            "|---|---|---|",
        ]
        for name, met, measured in report["claims"][v]:
            lines.append(f"| {name} | {'met' if met else 'NOT met'} | {measured} |")
    return "\n".join(lines) + "\n"


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = report["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    variants = list(summary)
    for i, key in enumerate(["accuracy", "occlusion/object"]):
        means = [summary[v].get(key, {}).get("mean", np.nan) for v in variants]
        stds = [summary[v].get(key, {}).get("std", 0) for v in variants]
        axes[0].bar(
            np.arange(len(variants)) + 0.4 * i, means, 0.4, yerr=stds, label=key
        )
    axes[0].set_xticks(np.arange(len(variants)) + 0.2, variants, rotation=15)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    orders = ["energy", "kept", "magnitude", "random", "grad_cam"]
    # Only the variants with a mask have deletion curves.
    masked = [v for v in variants if "deletion_auc/energy" in summary[v]]
    width = 0.8 / max(len(masked), 1)
    for j, v in enumerate(masked):
        means = [
            summary[v].get(f"deletion_auc/{o}", {}).get("mean", np.nan) for o in orders
        ]
        axes[1].bar(np.arange(len(orders)) + width * j, means, width, label=v)
    axes[1].set_xticks(np.arange(len(orders)) + 0.4 - width / 2, orders, rotation=15)
    axes[1].set_ylabel("deletion AUC (LeRF)")
    # Below the axes, so that no bar hides under the legend.
    axes[1].legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="4000 images, no spurious split: ~15 min on 2 cores",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["baseline", "ersm", "ersm_coherent"],
        choices=list(VARIANTS),
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--clutter", type=float, default=0.5)
    parser.add_argument("--distractors", type=int, default=4)
    parser.add_argument("--spurious-cue", type=float, default=0.9)
    parser.add_argument(
        "--spurious",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also train on the spurious-cue split (default: on, off with --quick)",
    )
    parser.add_argument(
        "--frozen",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the frozen-backbone recipe on the trained baseline",
    )
    parser.add_argument("--frozen-epochs", type=int, default=4)
    parser.add_argument(
        "--frozen-variants",
        nargs="+",
        default=["ersm", "paper"],
        choices=[v for v in (*VARIANTS, *TRAINED_HEAD) if v != "baseline"],
        help="mask variants of the frozen recipe (default: ersm paper)",
    )
    parser.add_argument("--output-dir", default=RESULTS)
    args = parser.parse_args(argv)
    epochs = args.epochs or 8
    n_train = args.n_train or (4000 if args.quick else 10000)
    spurious = args.spurious if args.spurious is not None else not args.quick
    runs = {v: [] for v in args.variants}
    start = time.time()
    for seed in args.seeds:
        kw = dict(clutter=args.clutter, distractors=args.distractors, seed=seed)
        xtr, ytr, _ = make_cluttered(n_train, split="train", **kw)
        test = make_cluttered(args.n_test, split="test", **kw)
        if spurious:
            xsp, ysp, _ = make_cluttered(
                n_train, split="train", spurious_cue=args.spurious_cue, **kw
            )
        for variant in args.variants:
            t0 = time.time()
            model = train(VARIANTS[variant], (xtr, ytr), seed, epochs)
            result = evaluate(model, test, VARIANTS[variant] is not None, seed)
            if spurious:
                cue_model = train(VARIANTS[variant], (xsp, ysp), seed, epochs)
                result["spurious_cue_test_accuracy"] = accuracy(
                    cue_model, test[0], test[1]
                )
            result["seconds"] = round(time.time() - t0, 1)
            runs[variant].append(result)
            print(
                json.dumps(
                    {"variant": variant, "seed": seed, **flatten("", result, {})}
                ),
                flush=True,
            )
            if variant == "baseline" and args.frozen:
                for name, res in frozen_recipe(
                    model,
                    (xtr, ytr),
                    test,
                    seed,
                    args.frozen_epochs,
                    args.frozen_variants,
                ).items():
                    runs.setdefault(name, []).append(res)
                    print(
                        json.dumps(
                            {"variant": name, "seed": seed, **flatten("", res, {})}
                        ),
                        flush=True,
                    )
    summary = summarize(runs)
    report = {
        "command": f"KERAS_BACKEND={_harness.BACKEND} python -m benchmarks.quality "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": _harness.machine(),
        "seeds": args.seeds,
        "epochs": epochs,
        "n_train": n_train,
        "n_test": args.n_test,
        "clutter": args.clutter,
        "distractors": args.distractors,
        "spurious_split": spurious,
        "seconds": round(time.time() - start, 1),
        "runs": runs,
        "summary": summary,
        "claims": {
            v: claims(summary, v)
            for v in runs
            if not v.endswith("baseline") and "baseline" in runs
        },
    }
    os.makedirs(args.output_dir, exist_ok=True)
    base = os.path.join(args.output_dir, f"quality_{_harness.BACKEND}")
    _harness.write_json(base + ".json", report)
    with open(base + ".md", "w") as f:
        f.write(to_markdown(report))
    plot(report, base + ".png")
    print(to_markdown(report))


if __name__ == "__main__":
    main()
