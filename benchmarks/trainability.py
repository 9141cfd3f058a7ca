"""Trainability benchmark: does `EnergyMask()` ever stop a model from learning?

A matrix of backbones x optimizers x datasets x seeds, each cell trained from
scratch with the mask variant(s) under test and without a mask (the
baseline), the seed set right before each model is built. Per run it
records test accuracy, whether the model left chance, the mean keep, and
the fraction of exactly-zero activations at the mask's input (the
backbone's features) before and after training: the energy collapsing a
backbone shows as that fraction going to 1 and the accuracy staying at
chance.

Backbones: a plain CNN without normalisation (three 3x3 Conv2D + ReLU, 32,
64, 64 filters, strides 1, 2, 2), the same CNN with BatchNorm, a small
KerasHub ResNet config and `keras.applications.MobileNetV3Small(weights=None)`
(the mask inserted at stride 8, a 4x4 grid at 32 px). Datasets:
`make_cluttered` with its defaults and a harder variant (15 classes, more
clutter and distractors, smaller objects), trained 30 epochs where the
bundled data trains 12 (`DATASET_EPOCHS`; `--epochs` sets both). Every
run trains on 3000 images, except where a backbone's `PROTOCOL` says
otherwise (`--train-size` sets them all).

Usage:

    KERAS_BACKEND=jax python -m benchmarks.trainability --quick
    KERAS_BACKEND=jax python -m benchmarks.trainability          # full matrix
    KERAS_BACKEND=jax python -m benchmarks.trainability --quick \\
        --variants default full_gradient --tag explore
    python -m benchmarks.trainability --summarize  # Markdown from the JSONL

Results are appended run by run to
`benchmarks/results/trainability[_TAG]_<backend>.jsonl` (a stopped run loses
nothing; a rerun skips the runs already there) and summarised in the `.md`
file of the same name.
"""

import argparse
import json
import math
import os
import time

import keras
import numpy as np

import keras_ersm
from benchmarks import _experimental
from keras_ersm.datasets import make_cluttered

RESULTS = os.path.join(os.path.dirname(__file__), "results")

# Mask variants: name -> EnergyMask kwargs (None: no mask, the baseline).
# Every variant below `default` was measured before the energy became a
# price per token (the default since session 6, `energy_score_gradient=0`),
# so each pins the previous `energy_score_gradient=1.0`: its runs in
# results/trainability_jax.jsonl stay what its kwargs build.
_REFERENCE_ENERGY = {"energy_score_gradient": 1.0}
# Likewise every variant measured before session 9, when the scoring
# kernel's default was Glorot uniform (`kernel_glorot` below), pins it.
_GLOROT = {"kernel_initializer": "glorot_uniform"}
VARIANTS = {
    "baseline": None,
    # The baseline, built after one extra draw from Python's seeded
    # generator (a Keras initializer without a seed draws its seed there
    # when constructed): the draw the mask's kernel initializer takes, so
    # its head starts where the masked model's does.
    # A control for how much of a cell's spread is the seed, not the mask.
    "baseline_shifted": "baseline_shifted",
    # `EnergyMask()`: since session 6 the energy is a fixed price per token
    # (`energy_score_gradient=0.0`), whose gradient always lowers the keep
    # (the runs named `price` until then); since session 9 the scoring
    # kernel starts as Glorot uniform at a tenth of its range (the runs
    # named `kernel_small` until then).
    "default": {},
    # The default of sessions 6-8: a Glorot-uniform scoring kernel (the runs
    # named `default` until session 9).
    "kernel_glorot": dict(_GLOROT),
    # The default until session 6: the energy's gradient also flows
    # through its own dependence on the scores, which raises a keep whose
    # score is below about 0.4 at low redundancy (benchmarks/energy_probe.py).
    "reference_energy": {**_REFERENCE_ENERGY, **_GLOROT},
    "paper": "paper",
    # The energy's gradient reaches the backbone's features in full: the
    # behaviour of keras_ersm 0.1.0's default layer.
    "full_gradient": {"energy_feature_gradient": 1.0, **_REFERENCE_ENERGY, **_GLOROT},
    "half_gradient": {"energy_feature_gradient": 0.5, **_REFERENCE_ENERGY, **_GLOROT},
    "no_energy": {"energy_regularizer": None, **_GLOROT},
    # The default layer without its energy: the same scoring kernel at the
    # same initial values as `default` (session 13).
    "no_energy_default_init": {"energy_regularizer": None},
    # The energy sets the keep level (bias) but not the ranking (kernel).
    "kernel_stop": {"energy_kernel_gradient": 0.0, **_REFERENCE_ENERGY, **_GLOROT},
    # Not adopted (benchmarks/_experimental.py): rescale by the
    # norm-weighted mean keep, so empty tokens cannot dilute the others.
    "norm_rescale": {
        "experimental": {"norm_rescale": True},
        **_REFERENCE_ENERGY,
        **_GLOROT,
    },
    "norm_kernel_stop": {
        "experimental": {"norm_rescale": True},
        "energy_kernel_gradient": 0.0,
        **_REFERENCE_ENERGY,
        **_GLOROT,
    },
    "norm_no_energy": {
        "experimental": {"norm_rescale": True},
        "energy_regularizer": None,
        **_GLOROT,
    },
    # The masked map is not divided by the mean keep (x * keep).
    "no_rescale": {"rescale": False, **_REFERENCE_ENERGY, **_GLOROT},
    # No gradient from the scores (task or energy) into the features: the
    # backbone trains only through `x * keep`.
    "score_stop": {"keep_feature_gradient": 0.0, **_REFERENCE_ENERGY, **_GLOROT},
    # A sharper keep (the "ranking and localization" work, docs/benchmarks.md,
    # "Quality"): the scores divided by 0.5.
    "t05": {"temperature": 0.5, **_REFERENCE_ENERGY, **_GLOROT},
    # The score also sees the token's norm relative to the image's mean
    # (`EnergyMask(norm_score=True)`, session 7), with the default energy.
    # (Not related to `norm_score_stop` below, an older experiment.)
    "with_norm_score": {"norm_score": True, **_GLOROT},
    # The same with today's default kernel (session 9).
    "default_norm_score": {"norm_score": True},
    # The energy sets the keep level (the bias) and the task alone the
    # ranking (the kernel and, with `norm_score`, the norm weight), on
    # session 9's default (session 10): the plain CNN's features die in the
    # first epoch with or without a mask, and the energy's ranking kept
    # the keep anti-correlated with the token norm (the few live tokens
    # weighted below the rest) while they recovered
    # (benchmarks/trainability_probe.py).
    "price_kernel_stop": {"energy_kernel_gradient": 0.0},
    "norm_kernel_stop_price": {"energy_kernel_gradient": 0.0, "norm_score": True},
    # `norm_score=True` with the norm weight starting at -1: the tokens of
    # larger norm are kept from the first step, so the few still alive when
    # a plain CNN's features die in its first epoch get the rescaled signal
    # and gradient (session 10). Its first runs (the plain CNN's hard cells,
    # Adam and AdamW at 2e-3) ran on a copy in benchmarks/_experimental.py
    # that assigned -1 after building (the same layer; commit 79f037a).
    "norm_init_neg1": {"norm_score": True, "norm_init": -1.0},
    # A weaker prior: on MobileNetV3Small, where the relative norms spread
    # about +-1, -1 ranked strongly enough from the start that the task
    # held the keep near 0.5 (the bias moved the wrong way, 0 to -0.12);
    # in a plain CNN's dead first epochs the few live tokens' relative norm
    # is large, so -0.25 might still rank them first there (session 10;
    # measured: it did not recover them, docs/concepts.md).
    "norm_init_neg025": {"norm_score": True, "norm_init": -0.25},
    # The strong prior with the keep starting low (bias 2: keep sigmoid(-2)
    # = 0.12 for a token of mean norm), so that a task that holds the keep
    # level where it starts (MobileNetV3Small) holds it sparse (session 10).
    "norm_init_neg1_bias2": {
        "norm_score": True,
        "norm_init": -1.0,
        "bias_initializer": keras.initializers.Constant(2.0),
    },
    # Between the two: bias 1 (keep sigmoid(-1) = 0.27 at mean norm). Bias 2
    # held MobileNetV3Small sparse (keep 0.12) but cost it 2.9 points with
    # AdamW; bias 0 left it at 0.52-0.53 (session 11).
    "norm_init_neg1_bias1": {
        "norm_score": True,
        "norm_init": -1.0,
        "bias_initializer": keras.initializers.Constant(1.0),
    },
    # Bias 1 left the keep at 0.27 with SGD 0.01 on MobileNetV3Small (the
    # bias barely moves there) and cost it 4.9 points; halfway (keep
    # sigmoid(-0.5) = 0.38 at mean norm), session 11.
    "norm_init_neg1_bias05": {
        "norm_score": True,
        "norm_init": -1.0,
        "bias_initializer": keras.initializers.Constant(0.5),
    },
    # The default layer with its scoring kernel's initializer seeded from
    # the run's seed (`build`), so that it takes no draw from Python's
    # seeded generator and every other weight, the head's too, starts as
    # the baseline's: the run differs from the baseline by the mask alone.
    # `default` takes that draw, so its head starts as `baseline_shifted`'s
    # (session 15: without a mask, MobileNetV3Small on 10000 harder images
    # with Adam, seed 0, passes 15% training accuracy after 5 epochs from
    # the baseline's head and after 9 from the shifted one).
    "default_matched": {"matched_init": True},
    # The same start with `energy_kernel_gradient=0.0` (`price_kernel_stop`
    # below): the energy sets the keep level, the task alone the ranking.
    "price_kernel_stop_matched": {"energy_kernel_gradient": 0.0, "matched_init": True},
    # The default energy with a zero scoring kernel at first: every token
    # starts with the same keep, so a slowly moving kernel (SGD) does not
    # leave a random ranking in place (session 7).
    "kernel0": {"kernel_initializer": "zeros"},
    # The default layer whose scores also learn to order the tokens as the
    # model's own class map does (benchmarks/_experimental.py,
    # `align_weight`; issue 13, session 17): does the second signal change
    # trainability? It reads the features with their gradient stopped.
    "align1": {"experimental": {"align_weight": 1.0}},
    # Not run yet: the signal on session 11's magnitude prior.
    "norm_init_neg1_bias1_align1": {
        "experimental": {"align_weight": 1.0},
        "norm_score": True,
        "norm_init": -1.0,
        "bias_initializer": keras.initializers.Constant(1.0),
    },
    "norm_score_stop": {
        "experimental": {"norm_rescale": True},
        "keep_feature_gradient": 0.0,
        **_REFERENCE_ENERGY,
        **_GLOROT,
    },
}

DATASETS = {
    "cluttered": {},
    # Harder: 15 classes, more clutter and distractors, smaller objects.
    # A first variant (20 classes, clutter 0.9, 8 distractors, objects
    # 0.35-0.6) left the plain CNN's baseline at chance on every seed
    # (benchmarks/results/trainability_hard_v1_jax.jsonl); this one leaves
    # chance after several epochs.
    "hard": {
        "num_classes": 15,
        "clutter": 0.7,
        "distractors": 6,
        "object_scale": (0.4, 0.75),
    },
}

# Epochs per dataset. On the harder data the plain CNN sits on a plateau
# (loss ln 15, most features at the mask's input zero) for about 14 epochs
# with or without a mask, so a 12-epoch run measured how long a seed's
# plateau lasts; at 30 epochs the baseline (Adam, AdamW) leaves chance on every seed
# (session 12; docs/benchmarks.md, "Trainability"). The runs before session
# 12 trained the harder data for 12 epochs; each record names its epochs.
DATASET_EPOCHS = {"cluttered": 12, "hard": 30}

OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(2e-3),
    "adamw": lambda: keras.optimizers.AdamW(2e-3),
    "sgd": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    # Other learning rates, for the cells whose baseline does not leave
    # chance on every seed at the rates above (the issue asks for "learning
    # rates where the baseline learns"; docs/benchmarks.md, "Trainability").
    "adam_1e-3": lambda: keras.optimizers.Adam(1e-3),
    "adam_5e-4": lambda: keras.optimizers.Adam(5e-4),
    "adamw_1e-3": lambda: keras.optimizers.AdamW(1e-3),
    "adamw_5e-4": lambda: keras.optimizers.AdamW(5e-4),
    "sgd_0.01": lambda: keras.optimizers.SGD(0.01, momentum=0.9),
    "sgd_0.2": lambda: keras.optimizers.SGD(0.2, momentum=0.9),
}


def _cnn(batchnorm, image_size):
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for i, (filters, strides) in enumerate(((32, 1), (64, 2), (64, 2))):
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same")(x)
        if batchnorm:
            x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.Activation("relu", name=f"relu{i}")(x)
    return keras.Model(inputs, x, name="bn_cnn" if batchnorm else "plain_cnn")


def _resnet(image_size):
    import keras_hub

    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],  # KerasHub requires 64 here.
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 64],  # KerasHub requires 64 first.
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        image_shape=(image_size, image_size, 3),
    )


def _mobilenet(image_size):
    model = keras.applications.MobileNetV3Small(
        weights=None,
        input_shape=(image_size, image_size, 3),
        include_top=False,
        include_preprocessing=False,
    )
    # Its BatchNormalization layers use momentum 0.999: after the 564 steps
    # of a run the moving statistics are still mostly their initial values,
    # and the baseline scored 63.6% training but 10.0% (chance) test
    # accuracy. 0.9, as in the other backbones, lets them follow.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


# name -> (builder(image_size), mask_at, input upsampling factor)
BACKBONES = {
    "plain_cnn": (lambda s: _cnn(False, s), "output", 1),
    "bn_cnn": (lambda s: _cnn(True, s), "output", 1),
    "resnet": (_resnet, "output", 1),
    "mobilenet_v3_small": (_mobilenet, "expanded_conv_2_add", 1),
}

# Where a backbone's runs differ from the matrix's, and why: the issue asks
# for "learning rates where the baseline learns" and harder data "where the
# baseline needs several epochs to leave chance", so each change here is
# decided by the baseline (without a mask) alone (docs/benchmarks.md,
# "Trainability", lists the cells each one replaces). Applied to the
# matrix's own optimizers and train size, not to ones named on the command
# line.
PROTOCOL = {
    "mobilenet_v3_small": {
        # At 0.05 its baseline stays at chance on 2 of 3 seeds of the
        # bundled data.
        "optimizers": {"sgd": "sgd_0.01"},
        # On 3000 hard images its baseline memorises (training accuracy
        # 88-90%, test accuracy 10-11%, the line of chance 10%, after 30
        # epochs); on 10000 it learns.
        "train_size": {"hard": 10000},
    },
}
TRAIN_SIZE = 3000


def protocol_optimizer(backbone, optimizer):
    """The optimizer a backbone's protocol trains for the matrix's `optimizer`."""
    return PROTOCOL.get(backbone, {}).get("optimizers", {}).get(optimizer, optimizer)


def train_size_for(backbone, dataset, settings):
    """The run's training images: `settings["train_size"]`, or the protocol's."""
    if settings.get("train_size"):
        return settings["train_size"]
    sizes = PROTOCOL.get(backbone, {}).get("train_size", {})
    return sizes.get(dataset, TRAIN_SIZE)


# The quick matrix is the failure the benchmark was written for (a plain CNN
# without normalisation, every optimizer, three seeds); the full one adds
# the other backbones and the harder data. Both train every run alike.
QUICK = {
    "backbones": ["plain_cnn"],
    "optimizers": ["adam", "adamw", "sgd"],
    "datasets": ["cluttered"],
    "seeds": [0, 1, 2],
    "epochs": None,  # DATASET_EPOCHS
    "train_size": None,  # train_size_for: TRAIN_SIZE or the backbone's PROTOCOL
}
FULL = {**QUICK, "backbones": list(BACKBONES), "datasets": list(DATASETS)}
TEST_SIZE = 1000
BATCH_SIZE = 64


def load_data(dataset, train_size, upsample=1):
    kwargs = DATASETS[dataset]
    x, y, _ = make_cluttered(train_size, seed=0, **kwargs)
    xt, yt, _ = make_cluttered(TEST_SIZE, split="test", seed=0, **kwargs)
    if upsample > 1:
        x = np.repeat(np.repeat(x, upsample, 1), upsample, 2)
        xt = np.repeat(np.repeat(xt, upsample, 1), upsample, 2)
    return (x, y), (xt, yt), kwargs.get("num_classes", 10)


def build(backbone_name, variant, num_classes, seed, image_size=32):
    """The classifier for one run; the seed is set right before building."""
    builder, mask_at, _ = BACKBONES[backbone_name]
    keras.utils.set_random_seed(seed)
    backbone = builder(image_size)
    mask_kwargs = VARIANTS[variant]
    if mask_kwargs == "baseline_shifted":
        keras.initializers.GlorotUniform()((1, 1))
        mask_kwargs = None
    if mask_kwargs is None:
        return keras_ersm.models.build_classifier(
            backbone, num_classes, mask_at=None, freeze_backbone=False
        ), _probe_name(backbone, mask_at)
    if mask_kwargs == "paper":
        config = keras_ersm.EnergyMask.paper().get_config()
        mask_kwargs = {
            k: config[k]
            for k in (
                "temperature",
                "kernel_initializer",
                "bias_initializer",
                "energy_regularizer",
                "rescale",
                "energy_score_gradient",
            )
        }
    if mask_kwargs.get("matched_init"):
        mask_kwargs = {k: v for k, v in mask_kwargs.items() if k != "matched_init"}
        mask_kwargs["kernel_initializer"] = keras.initializers.VarianceScaling(
            scale=keras_ersm.layers.energy_mask.DEFAULT_KERNEL_SCALE,
            mode="fan_avg",
            distribution="uniform",
            seed=seed,
        )
    if "experimental" in mask_kwargs:
        if mask_at != "output":
            raise ValueError(
                f"Variant {variant!r} puts its mask after the backbone only. "
                f"Received: backbone={backbone_name!r} (mask at {mask_at!r})"
            )
        kwargs = {k: v for k, v in mask_kwargs.items() if k != "experimental"}
        model = _experimental.build_classifier(
            backbone, num_classes, **mask_kwargs["experimental"], **kwargs
        )
        return model, _probe_name(backbone, mask_at)
    model = keras_ersm.models.build_classifier(
        backbone, num_classes, mask_at=mask_at, freeze_backbone=False, **mask_kwargs
    )
    return model, _probe_name(backbone, mask_at)


def _probe_name(backbone, mask_at):
    """Name of the layer whose output feeds the mask (kept in the clone)."""
    if mask_at == "output":
        return backbone.layers[-1].name
    return mask_at


def zero_fraction(model, probe, x):
    features = keras.Model(model.inputs, model.get_layer(probe).output)
    f = features.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.asarray(f) == 0.0))


def flatness(keep):
    """Participation ratio of each image's keep map, over its token count.

    `keep` is (images, tokens). 1: every token weighted alike, which is what
    `rescale=True` divides a uniform keep into (the model then computes what
    it computes without a mask, whatever the mean keep); 1/tokens: one token.
    """
    keep = np.asarray(keep, dtype=np.float64).reshape(len(keep), -1)
    weights = keep / (keep.sum(axis=1, keepdims=True) + 1e-12)
    return 1.0 / (weights**2).sum(axis=1) / keep.shape[1]


def keep_statistics(model, x):
    """The first mask's mean keep and mean flatness on `x` (None, None
    without a mask)."""
    layers = keras_ersm.models.energy_mask_layers(model)
    if not layers:
        return None, None
    maps = keras_ersm.models.keep_maps(model, x)
    if isinstance(maps, dict):
        maps = list(maps.values())[0]
    maps = np.asarray(maps)
    return float(np.mean(maps)), float(np.mean(flatness(maps)))


class EpochTrace(keras.callbacks.Callback):
    """Per epoch: the training loss and accuracy, and the first mask's mean
    keep and flatness on `x` (absent without a mask), so a run's record
    shows when it left its first plateau, not only where it ended."""

    def __init__(self, x):
        super().__init__()
        self.x = x
        self.trace = {"loss": [], "accuracy": [], "keep": [], "flat": []}

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for name in ("loss", "accuracy"):
            value = float(logs.get(name, float("nan")))
            self.trace[name].append(round(value, 4) if math.isfinite(value) else None)
        keep, flat = keep_statistics(self.model, self.x)
        if keep is not None:
            self.trace["keep"].append(round(keep, 4))
            self.trace["flat"].append(round(flat, 4))


def compile_model(model, optimizer):
    """Compiles a run's model: `OPTIMIZERS[optimizer]`, cross-entropy on
    logits, accuracy, jit where the backend jits."""
    model.compile(
        optimizer=OPTIMIZERS[optimizer](),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=keras.backend.backend() != "torch",
    )


def epochs_for(dataset, settings):
    """The run's epochs: `settings["epochs"]`, or the dataset's own."""
    return settings["epochs"] or DATASET_EPOCHS[dataset]


def planned_cells(settings, protocol=True):
    """The cells `settings` trains: (backbone, optimizer, dataset, epochs,
    training images). With `protocol`, each backbone's `PROTOCOL` maps the
    optimizers."""
    cells = []
    for dataset in settings["datasets"]:
        for backbone in settings["backbones"]:
            for optimizer in settings["optimizers"]:
                if protocol:
                    optimizer = protocol_optimizer(backbone, optimizer)
                epochs = epochs_for(dataset, settings)
                size = train_size_for(backbone, dataset, settings)
                cells.append((backbone, optimizer, dataset, epochs, size))
    return cells


def run_data(backbone, dataset, settings, cache=None):
    """A run's data, `load_data` at its training images and the backbone's
    upsampling; `cache` (a dict) keeps what was loaded for the next run."""
    key = (dataset, train_size_for(backbone, dataset, settings), BACKBONES[backbone][2])
    if cache is None:
        return load_data(*key)
    if key not in cache:
        cache[key] = load_data(*key)
    return cache[key]


def run_one(backbone, optimizer, dataset, seed, variant, settings, data_cache):
    epochs = epochs_for(dataset, settings)
    train_size = train_size_for(backbone, dataset, settings)
    (x, y), (xt, yt), num_classes = run_data(backbone, dataset, settings, data_cache)
    model, probe = build(backbone, variant, num_classes, seed)
    probe_x = xt[:256]
    zeros_start = zero_fraction(model, probe, probe_x)
    compile_model(model, optimizer)
    trace = EpochTrace(probe_x)
    start = time.time()
    history = model.fit(
        x, y, batch_size=BATCH_SIZE, epochs=epochs, verbose=0, callbacks=[trace]
    )
    seconds = time.time() - start
    test_acc = 100.0 * float(model.evaluate(xt, yt, batch_size=256, verbose=0)[1])
    chance = 100.0 / num_classes
    losses = history.history["loss"]
    keep, flat = keep_statistics(model, probe_x)
    return {
        "backbone": backbone,
        "optimizer": optimizer,
        "dataset": dataset,
        "seed": seed,
        "variant": variant,
        "epochs": epochs,
        "train_size": train_size,
        "test_accuracy": test_acc,
        "train_accuracy": 100.0 * float(history.history["accuracy"][-1]),
        "final_loss": float(losses[-1]) if math.isfinite(losses[-1]) else None,
        "chance": chance,
        "left_chance": left_chance(test_acc, chance),
        "mean_keep": keep,
        "eff_tokens": flat,
        "zero_fraction_start": zeros_start,
        "zero_fraction_end": zero_fraction(model, probe, probe_x),
        "seconds": seconds,
        "per_epoch": {k: v for k, v in trace.trace.items() if v},
    }


def left_chance(accuracy, chance):
    """A run leaves chance when its test accuracy is at least 1.5x chance."""
    return bool(accuracy >= 1.5 * chance)


def _epochs(r):
    # Every record names its epochs; 12 for any written before they did.
    return r.get("epochs", 12)


def _train_size(r):
    return r.get("train_size", TRAIN_SIZE)


def _cell(r):
    return (r["backbone"], r["optimizer"], r["dataset"], _epochs(r), _train_size(r))


def _key(r):
    return (*_cell(r), r["seed"], r["variant"])


def _paths(tag):
    suffix = f"_{tag}" if tag else ""
    base = os.path.join(RESULTS, f"trainability{suffix}_{keras.backend.backend()}")
    return base + ".jsonl", base + ".md"


def read_records(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def p_more_at_chance(a, n, b, m):
    """One-sided Fisher exact test: the probability, if the two groups did
    not differ, of `a` or more runs at chance among `n` when `a + b` of the
    `n + m` runs are (`b` of the `m` reference runs)."""
    total, hits = n + m, a + b
    tail = sum(
        math.comb(hits, k) * math.comb(total - hits, n - k)
        for k in range(a, min(n, hits) + 1)
    )
    return tail / math.comb(total, n)


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def _difference(mine, theirs):
    """Mean accuracy `mine` minus the baseline's `theirs` (on the same
    seeds), and the standard error of that difference from the two groups'
    spreads over seeds (unpaired: a seed's runs are not reproducible on JAX
    CPU). NaN where a group has fewer than two seeds."""
    if len(mine) < 2:
        return float("nan"), float("nan")
    se = math.sqrt(
        np.var(mine, ddof=1) / len(mine) + np.var(theirs, ddof=1) / len(theirs)
    )
    return float(np.mean(mine) - np.mean(theirs)), float(se)


def _without_energy(variant):
    """Whether the variant's mask has no energy (its keep is not priced)."""
    kwargs = VARIANTS.get(variant)
    return isinstance(kwargs, dict) and kwargs.get("energy_regularizer", 0) is None


def summarize(records):
    """Per cell (backbone, optimizer, dataset, epochs, training images) and
    variant: the verdict.

    A run leaves chance when its test accuracy is at least 1.5x chance. In
    a cell where the baseline leaves chance on some seed, a variant passes
    when it leaves chance on every seed on which the baseline does, its
    mean test accuracy is within 1 point of the baseline's or above (both
    means over the seeds the variant ran), and its mean keep is below 0.5.
    The shifted control (the baseline rebuilt after one extra draw of the
    seeded generator) has no mask, so its verdict skips the keep test: it
    says how often a reseed of the baseline alone fails the verdict. A
    variant without an energy (`energy_regularizer=None`) is not priced
    towards sparsity, so it skips the keep test too.
    """
    cells = {}
    for r in records:
        r = {**r, "left_chance": left_chance(r["test_accuracy"], r["chance"])}
        cells.setdefault(_cell(r), {}).setdefault(r["variant"], []).append(r)
    rows = []
    for cell, variants in sorted(cells.items()):
        base = {r["seed"]: r for r in variants.get("baseline", [])}
        base_ok = any(r["left_chance"] for r in base.values())
        both = variants.get("baseline", []) + variants.get("baseline_shifted", [])
        pooled = (sum(not r["left_chance"] for r in both), len(both))
        for variant, runs in sorted(variants.items()):
            runs = sorted(runs, key=lambda r: r["seed"])
            acc = _mean([r["test_accuracy"] for r in runs])
            # The baseline on the same seeds (cells have different seed sets
            # per variant when a variant was run on more seeds).
            paired = [r for r in runs if r["seed"] in base]
            theirs = [base[r["seed"]]["test_accuracy"] for r in paired]
            base_acc = _mean(theirs)
            keep = _mean([r["mean_keep"] for r in runs])
            diff, diff_se = _difference([r["test_accuracy"] for r in paired], theirs)
            row = {
                "backbone": cell[0],
                "optimizer": cell[1],
                "dataset": cell[2],
                "epochs": cell[3],
                "train_size": cell[4],
                "variant": variant,
                "seeds": [r["seed"] for r in runs],
                "accuracy_per_seed": [round(r["test_accuracy"], 1) for r in runs],
                "worst_accuracy": min(r["test_accuracy"] for r in runs),
                "mean_accuracy": acc,
                "baseline_mean_accuracy": base_acc,
                "difference": diff,
                "difference_se": diff_se,
                "mean_keep": keep,
                "eff_tokens": _mean([r.get("eff_tokens") for r in runs]),
                "zero_fraction_start": _mean([r["zero_fraction_start"] for r in runs]),
                "zero_fraction_end_max": max(r["zero_fraction_end"] for r in runs),
                "all_left_chance": all(r["left_chance"] for r in runs),
                "runs_at_chance": sum(not r["left_chance"] for r in runs),
            }
            # The rate test, where the cell has the shifted control: the
            # variant's at-chance count against both baselines pooled (runs
            # of one seed are not reproducible on JAX CPU, so a per-seed
            # comparison only measures chance; docs/benchmarks.md).
            if "baseline_shifted" in variants and not variant.startswith("baseline"):
                row["p_more_at_chance"] = p_more_at_chance(
                    row["runs_at_chance"], len(runs), *pooled
                )
            if variant == "baseline":
                row["verdict"] = "baseline" if base_ok else "baseline stays at chance"
            elif not base_ok:
                row["verdict"] = "n/a (baseline at chance)"
            else:
                # Every seed on which the baseline left chance, the mask
                # must leave it too; accuracy and keep are means over seeds.
                followed = all(
                    r["left_chance"]
                    for r in runs
                    if r["seed"] in base and base[r["seed"]]["left_chance"]
                )
                sparse = (
                    keep < 0.5
                    or variant == "baseline_shifted"
                    or _without_energy(variant)
                )
                ok = followed and acc >= base_acc - 1.0 and sparse
                row["verdict"] = "pass" if ok else "FAIL"
            rows.append(row)
    return rows


def to_markdown(rows, title):
    lines = [
        f"# {title}",
        "",
        "Test accuracy per seed (%), its worst seed and mean, the baseline's "
        "mean, mean keep, its flatness (the participation ratio of each "
        "image's keep map over its token count, mean over images and seeds: "
        "1 is a uniform map, which `rescale=True` turns into no mask at all, "
        "1/tokens one token; runs before session 14 did not record it), "
        "the fraction of exactly-zero activations at the "
        "mask's input at the start (mean over seeds) and the end (worst "
        "seed). A run leaves chance when its test accuracy is at least 1.5x "
        "chance; 'at chance' counts the runs that do not. Verdict: in a cell "
        "where the baseline leaves chance on some seed, a variant passes when "
        "it leaves chance on every seed on which the baseline does, its mean "
        "accuracy is within 1 point of the baseline's or above (the "
        "baseline's mean over the same seeds), and its mean keep is below 0.5. "
        "baseline_shifted, the control (the baseline after one extra draw "
        "of the seeded generator), gets the same verdict without the keep "
        "test: how often a reseed of the baseline alone fails it; so do the "
        "variants without an energy (no_energy, norm_no_energy). "
        "p: where the cell has the shifted control, the one-sided Fisher "
        "exact p that the variant is at chance more often than both "
        "baselines pooled. Δ ± se: the mean minus the baseline's mean on "
        "the same seeds, with the standard error of that difference from the "
        "spread over seeds (a verdict within about 2 se of the 1-point line "
        "cannot tell the mask from the seed).",
        "",
        "| backbone | optimizer | dataset | epochs | images | variant | "
        "acc per seed | worst | mean | baseline mean | Δ ± se | at chance | p | "
        "keep | flat | zeros start | zeros end (max) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        keep = "" if math.isnan(r["mean_keep"]) else f"{r['mean_keep']:.3f}"
        flat = r.get("eff_tokens", float("nan"))
        flat = "" if math.isnan(flat) else f"{flat:.2f}"
        p = r.get("p_more_at_chance")
        p_value = "" if p is None else f"{p:.2f}"
        lines.append(
            f"| {r['backbone']} | {r['optimizer']} | {r['dataset']} | "
            f"{r['epochs']} | {r['train_size']} | {r['variant']} | "
            f"{', '.join(f'{a:.1f}' for a in r['accuracy_per_seed'])}"
            f" | {r['worst_accuracy']:.1f} | {r['mean_accuracy']:.1f} | "
            f"{r['baseline_mean_accuracy']:.1f} | {_signed(r)} | "
            f"{r['runs_at_chance']}/{len(r['seeds'])} | {p_value} | {keep} | "
            f"{flat} | "
            f"{r['zero_fraction_start']:.3f} | {r['zero_fraction_end_max']:.3f} | "
            f"{r['verdict']} |"
        )
    by_variant = {}
    for r in rows:
        if r["variant"] in ("baseline", "baseline_shifted"):
            continue
        by_variant.setdefault(r["variant"], []).append(r["verdict"])
    lines += [
        "",
        "| variant | cells passed | cells failed | n/a |",
        "|---|---|---|---|",
    ]
    for variant, vs in sorted(by_variant.items()):
        lines.append(
            f"| {variant} | {vs.count('pass')} | {vs.count('FAIL')} | "
            f"{sum(v.startswith('n/a') for v in vs)} |"
        )
    lines += [
        "",
        "The protocol (`FULL` with each backbone's `PROTOCOL`: its learning "
        "rates, training images and `DATASET_EPOCHS`), cell by cell, for "
        "`default`:",
        "",
        "| backbone | optimizer | dataset | epochs | images | seeds | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in protocol_verdicts(rows):
        lines.append(
            f"| {r['backbone']} | {r['optimizer']} | {r['dataset']} | "
            f"{r['epochs']} | {r['train_size']} | {r['seeds']} | {r['verdict']} |"
        )
    pooled = pooled_rates(rows)
    if pooled:
        lines += [
            "",
            "Rate test pooled over the optimizers that have the shifted control "
            "(one-sided Fisher exact p that the variant is at chance more often "
            "than both baselines):",
            "",
            "| backbone | dataset | epochs | images | optimizers | variant | "
            "at chance | baselines at chance | p |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in pooled:
            lines.append(
                f"| {r['backbone']} | {r['dataset']} | {r['epochs']} | "
                f"{r['train_size']} | {', '.join(r['optimizers'])} "
                f"| {r['variant']} | {r['at_chance']}/{r['runs']} | "
                f"{r['baselines_at_chance']}/{r['baseline_runs']} | {r['p']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def protocol_cells():
    """The full matrix's cells as the protocol trains them."""
    return sorted(planned_cells(FULL), key=lambda c: (BACKBONE_ORDER[c[0]], c[1:]))


BACKBONE_ORDER = {name: i for i, name in enumerate(BACKBONES)}


_CELL_FIELDS = ("backbone", "optimizer", "dataset", "epochs", "train_size")


def protocol_verdicts(rows, variant="default"):
    """`variant`'s verdict in every protocol cell ('not run' where it has
    no runs), with the seeds it ran."""
    found = {_cell(r): r for r in rows if r["variant"] == variant}
    out = []
    for cell in protocol_cells():
        row = found.get(cell)
        if row is None:
            seeds, verdict = "", "not run"
        else:
            seeds, verdict = ", ".join(map(str, row["seeds"])), row["verdict"]
            missing = set(FULL["seeds"]) - set(row["seeds"])
            if missing:
                verdict = f"partial: {verdict}, seeds {sorted(missing)} not run"
        out.append(
            {
                **dict(zip(_CELL_FIELDS, cell, strict=True)),
                "seeds": seeds,
                "verdict": verdict,
            }
        )
    return out


def _signed(row):
    if row["variant"] == "baseline" or math.isnan(row["difference"]):
        return ""
    return f"{row['difference']:+.1f} ± {row['difference_se']:.1f}"


def pooled_rates(rows):
    """The rate test of each variant per backbone and dataset, pooled over
    the optimizers whose cell has the shifted control."""
    groups = {}
    for r in rows:
        group = (r["backbone"], r["dataset"], r["epochs"], r["train_size"])
        groups.setdefault(group, []).append(r)
    out = []
    for (backbone, dataset, epochs, train_size), group in sorted(groups.items()):
        optimizers = sorted(
            {r["optimizer"] for r in group if r["variant"] == "baseline_shifted"}
        )
        group = [r for r in group if r["optimizer"] in optimizers]
        base = [r for r in group if r["variant"].startswith("baseline")]
        b = sum(r["runs_at_chance"] for r in base)
        m = sum(len(r["seeds"]) for r in base)
        for variant in sorted(
            {r["variant"] for r in group} - {"baseline", "baseline_shifted"}
        ):
            mine = [r for r in group if r["variant"] == variant]
            if {r["optimizer"] for r in mine} != set(optimizers):
                continue
            a = sum(r["runs_at_chance"] for r in mine)
            n = sum(len(r["seeds"]) for r in mine)
            out.append(
                {
                    "backbone": backbone,
                    "dataset": dataset,
                    "epochs": epochs,
                    "train_size": train_size,
                    "optimizers": optimizers,
                    "variant": variant,
                    "at_chance": a,
                    "runs": n,
                    "baselines_at_chance": b,
                    "baseline_runs": m,
                    "p": p_more_at_chance(a, n, b, m),
                }
            )
    return out


def positive_int(text):
    """An argparse type: an integer of at least 1, refused by value otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(
            f"expected an integer of at least 1. Received: {text!r}"
        )
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the 15-minute matrix")
    parser.add_argument("--backbones", nargs="+", choices=list(BACKBONES))
    parser.add_argument("--optimizers", nargs="+", choices=list(OPTIMIZERS))
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--epochs", type=positive_int)
    parser.add_argument("--train-size", type=positive_int)
    parser.add_argument(
        "--variants",
        nargs="*",
        default=["default"],
        choices=[v for v in VARIANTS if v != "baseline"],
        help="mask variants to train beside the baseline (default: default; "
        "none: the baseline alone)",
    )
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument(
        "--summarize", action="store_true", help="only rewrite the Markdown"
    )
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    for name in ("backbones", "optimizers", "datasets", "seeds", "epochs"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.train_size is not None:
        settings["train_size"] = args.train_size
    jsonl, md = _paths(args.tag)
    title = (
        f"Trainability matrix ({keras.backend.backend()}"
        f"{', ' + args.tag if args.tag else ''})"
    )
    if not args.summarize:
        os.makedirs(RESULTS, exist_ok=True)
        done = {_key(r) for r in read_records(jsonl)}
        cache = {}
        start = time.time()
        cells = planned_cells(settings, protocol=args.optimizers is None)
        for cell in cells:  # in `_cell`'s order, so `_key` is (*cell, seed, variant)
            backbone, optimizer, dataset, _, size = cell
            for seed in settings["seeds"]:
                for variant in ["baseline", *args.variants]:
                    if (*cell, seed, variant) in done:
                        continue
                    r = run_one(
                        backbone,
                        optimizer,
                        dataset,
                        seed,
                        variant,
                        settings,
                        cache,
                    )
                    with open(jsonl, "a") as f:
                        f.write(json.dumps(r) + "\n")
                    keep = r["mean_keep"]
                    print(
                        f"[{time.time() - start:6.0f}s] {dataset:9s} "
                        f"{backbone:18s} {optimizer:5s} n={size} seed={seed} "
                        f"{variant:14s} acc={r['test_accuracy']:5.1f} "
                        f"keep={'-' if keep is None else f'{keep:.3f}'} "
                        f"zeros {r['zero_fraction_start']:.2f}->"
                        f"{r['zero_fraction_end']:.2f}",
                        flush=True,
                    )
    rows = summarize(read_records(jsonl))
    with open(md, "w") as f:
        f.write(to_markdown(rows, title))
    with open(jsonl.replace(".jsonl", ".json"), "w") as f:
        json.dump(
            {
                "settings": settings,
                "protocol": PROTOCOL,
                "protocol_verdicts": protocol_verdicts(rows),
                "cells": rows,
            },
            f,
            indent=2,
        )
    print(f"wrote {md}")


if __name__ == "__main__":
    main()
