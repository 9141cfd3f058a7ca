"""Train an ERSM classifier and its unmasked baseline, evaluate both, report.

This is keras_ersm's main job. It trains the same backbone twice, once with
an `EnergyMask` on its last feature map (the paper's recipe:
backbone -> EnergyMask -> global average pooling -> Dense) and once without
it, then measures clean accuracy, accuracy under occlusion, deletion curves
(with AUCs), keep-map statistics and, when the data has object masks, how
well the keep map lands on the object. It writes to `--output-dir`:

- `report.md`: the tables to read first; `report.json`: every number;
- `deletion_curves.png`, `occlusion.png`, `keep_overlay.png`,
  `mask_histogram.png` (and `localization.png` with object masks);
- `ersm.keras` and `baseline.keras`: the trained models.

Files are written to a staging folder and moved into place at the end,
the reports last, so an interrupted run never leaves a complete-looking
report behind.

Data (`--dataset`): `cifar10` through tensorflow-datasets, `cluttered` (the
bundled offline benchmark with object masks, `keras_ersm.datasets.
make_cluttered`), or `auto` (CIFAR-10 when it is already prepared in
`--data-dir`, otherwise the bundled benchmark; `auto` never downloads, so
the default run does not touch the network: ask for `--dataset cifar10` to
download). Offline, the defaults finish in a few minutes on a
laptop CPU:

    KERAS_BACKEND=jax python examples/train_cifar.py
    KERAS_BACKEND=jax python examples/train_cifar.py --quick  # a smoke test
    python examples/train_cifar.py --dataset cifar10 --epochs 30 \\
        --backbone hub_resnet_small  # worth a GPU
"""

import argparse
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time

import numpy as np

# TensorFlow's start-up lines, printed by its C++ code to the stderr file
# descriptor before any logging setting applies (TF_CPP_MIN_LOG_LEVEL does
# not reach them since TensorFlow 2.19).
_STARTUP_NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations",
    "Could not find cuda drivers",
    "cpu_feature_guard",
    "To enable the following instructions",
    "failed call to cuInit",
    "Unable to register cu",
    "computation placer already registered",
)

BACKBONES = (
    "cv_resnet_small",
    "hub_resnet_small",
    "tiny",
    "mobilenet_v3_small",
    "resnet50",
)
DATASETS = ("auto", "cifar10", "cluttered")
REPORT_FILES = ("report.json", "report.md")
PLOT_FILES = (
    "deletion_curves.png",
    "occlusion.png",
    "keep_overlay.png",
    "mask_histogram.png",
)
MODEL_FILES = ("ersm.keras", "baseline.keras")
# Sizes per dataset: (train images, evaluation images, epochs).
_DEFAULTS = {"cluttered": (5000, 500, 6), "cifar10": (None, 1000, 10)}
_QUICK = (256, 64, 1)


def _positive_int(text, minimum=1):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}; expected an integer >= {minimum}"
        )
    return value


def _non_negative_int(text):
    return _positive_int(text, minimum=0)


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}; expected a number in [0, 1]"
        )
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows `(default: ...)` once: not where the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "(default" in text or default is None or default is False:
            return text
        return super()._get_help_string(action)


def _verbosity(text):
    if text == "auto":
        return text
    if text in ("0", "1", "2"):
        return int(text)
    raise argparse.ArgumentTypeError(
        f"invalid value {text!r}; expected auto, 0, 1 or 2"
    )


def build_parser():
    parser = argparse.ArgumentParser(
        prog="train_cifar.py",
        description=(
            "Train an ERSM classifier and the same model without the mask, "
            "evaluate both (accuracy, occlusion, deletion curves, mask "
            "statistics, localization) and write report.md, report.json, "
            "PNG plots and .keras models."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default="auto",
        help="auto: CIFAR-10 when already prepared in --data-dir (never "
        "downloads), else the bundled cluttered benchmark; cifar10 downloads "
        "when needed",
    )
    parser.add_argument(
        "--backbone",
        choices=BACKBONES,
        default="cv_resnet_small",
        help="cv_resnet_small: KerasCV ResNetV2Backbone (small config); "
        "hub_resnet_small: KerasHub ResNetBackbone (small config); tiny: a "
        "4-layer Keras CNN; mobilenet_v3_small, resnet50: keras.applications "
        "(weights=None)",
    )
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="training epochs (default: 6 on cluttered, 10 on cifar10, 1 with --quick)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        help="images per training and evaluation batch",
    )
    parser.add_argument(
        "--patch-size",
        type=_positive_int,
        default=1,
        help="EnergyMask token side on the backbone's last feature map",
    )
    parser.add_argument(
        "--coherence-steps",
        type=_non_negative_int,
        default=0,
        help="mean-field steps of coherent ERSM (0: the reference layer)",
    )
    parser.add_argument(
        "--learning-rate", type=float, default=2e-3, help="Adam learning rate"
    )
    parser.add_argument(
        "--bn-momentum",
        type=_fraction,
        default=0.9,
        help="momentum of every BatchNormalization layer; Keras' 0.99 lags "
        "behind in short runs, so inference accuracy trails training",
    )
    parser.add_argument(
        "--train-size",
        type=_positive_int,
        default=None,
        help="training images (default: 5000 on cluttered, all of CIFAR-10, "
        "256 with --quick)",
    )
    parser.add_argument(
        "--eval-size",
        type=_positive_int,
        default=None,
        help="test images for the evaluations (default: 500 on cluttered, "
        "1000 on cifar10, 64 with --quick)",
    )
    parser.add_argument(
        "--spurious-cue",
        type=_fraction,
        default=0.0,
        help="cluttered only: probability that a training image's background "
        "hue gives its class away (never at test time)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="tensorflow-datasets data_dir for CIFAR-10 (default: "
        "tensorflow-datasets' own, ~/tensorflow_datasets)",
    )
    parser.add_argument(
        "--output-dir",
        default=os.path.join("runs", "cifar"),
        help="folder for the report, plots and models (created if needed; "
        "files of an earlier run there are replaced)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test of the pipeline (256 training and 64 evaluation "
        "images, 1 epoch): its numbers are not results",
    )
    parser.add_argument(
        "--seed",
        type=_non_negative_int,
        default=0,
        help="seed of the weights, the data order, the generated benchmark "
        "and the random evaluations",
    )
    parser.add_argument(
        "--verbose",
        type=_verbosity,
        default="auto",
        help="progress of training and evaluation: 0 silent, 1 progress bars, "
        "2 one line per epoch and per evaluation stage; auto: 1 on a "
        "terminal, 2 when the output goes to a file or pipe",
    )
    return parser


def check_output_dir(path):
    """Creates `path` if needed and checks it is writable; returns None or why."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        return f"{error.strerror or error} ({path})"
    return None


# ----------------------------------------------------------------------------
# Data


def run_settings(args, dataset):
    """(train images or None for all, evaluation images, epochs) for a dataset."""
    train_size, eval_size, epochs = _QUICK if args.quick else _DEFAULTS[dataset]
    return (
        args.train_size or train_size,
        args.eval_size or eval_size,
        args.epochs or epochs,
    )


def load_data(args):
    """Returns (train, test, info); `train`/`test` are (x, y, masks or None)."""
    from keras_ersm import datasets

    reason = None
    if args.dataset in ("auto", "cifar10"):
        train_size, eval_size, _ = run_settings(args, "cifar10")
        download = args.dataset == "cifar10"
        try:
            x_train, y_train = datasets.load_cifar10(
                "train" if train_size is None else f"train[:{train_size}]",
                data_dir=args.data_dir,
                download=download,
            )
            x_test, y_test = datasets.load_cifar10(
                f"test[:{eval_size}]", data_dir=args.data_dir, download=download
            )
            info = {
                "name": "cifar10",
                "num_classes": 10,
                "class_names": list(datasets.CIFAR10_CLASSES),
                "note": "CIFAR-10 (tensorflow-datasets)",
            }
            return (x_train, y_train, None), (x_test, y_test, None), info
        except (datasets.DatasetUnavailableError, ImportError) as error:
            if args.dataset == "cifar10":
                raise RuntimeError(str(error).splitlines()[0]) from error
            reason = str(error).splitlines()[0]
    train_size, eval_size, _ = run_settings(args, "cluttered")
    options = dict(spurious_cue=args.spurious_cue, seed=args.seed)
    train = datasets.make_cluttered(train_size, split="train", **options)
    test = datasets.make_cluttered(eval_size, split="test", **options)
    info = {
        "name": "cluttered",
        "num_classes": 10,
        "class_names": list(datasets.GLYPHS[:10]),
        "note": "the bundled cluttered-glyphs benchmark "
        "(keras_ersm.datasets.make_cluttered)",
        "cifar10_unavailable": reason,
        "spurious_cue": args.spurious_cue,
    }
    return train, test, info


# ----------------------------------------------------------------------------
# Backbones


def build_backbone(name, input_shape):
    """A Functional backbone ending in a 4-D feature map (8x8 on 32x32)."""
    import keras

    if name == "tiny":
        inputs = keras.Input(input_shape)
        x = inputs
        for i, (filters, strides) in enumerate(((16, 1), (32, 2), (32, 1), (64, 2))):
            x = keras.layers.Conv2D(
                filters,
                3,
                strides=strides,
                padding="same",
                use_bias=False,
                name=f"conv{i}",
            )(x)
            x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
            x = keras.layers.ReLU(name=f"relu{i}")(x)
        return keras.Model(inputs, x, name="tiny_cnn")
    if name == "cv_resnet_small":
        import keras_cv

        # ResNet50V2's layout with two stacks of two blocks and 16/32
        # filters; the stem (stride 4) and stride-1 stacks give an 8x8 map.
        return keras_cv.models.ResNetV2Backbone(
            stackwise_filters=[16, 32],
            stackwise_blocks=[2, 2],
            stackwise_strides=[1, 1],
            include_rescaling=False,
            input_shape=input_shape,
            name="cv_resnet_small",
        )
    if name == "hub_resnet_small":
        import keras_hub

        # ResNet18's basic blocks, one per stack (KerasHub wants 64 filters
        # in the stem and first stack); stride-4 stem, 8x8 output on 32x32.
        return keras_hub.models.ResNetBackbone(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[3],
            stackwise_num_filters=[64, 128],
            stackwise_num_blocks=[1, 1],
            stackwise_num_strides=[1, 1],
            block_type="basic_block",
            image_shape=input_shape,
            name="hub_resnet_small",
        )
    if name == "mobilenet_v3_small":
        return keras.applications.MobileNetV3Small(
            input_shape=input_shape,
            include_top=False,
            weights=None,
            include_preprocessing=False,
        )
    if name == "resnet50":
        return keras.applications.ResNet50(
            input_shape=input_shape, include_top=False, weights=None
        )
    raise ValueError(
        f"Invalid value for argument `backbone`. Expected one of {BACKBONES}. "
        f"Received: backbone={name!r}"
    )


def set_batchnorm_momentum(model, momentum):
    """Sets the momentum of every BatchNormalization layer, nested ones too."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
        elif getattr(layer, "layers", None):
            set_batchnorm_momentum(layer, momentum)


def pass_through_mask(baseline):
    """The baseline with an identity EnergyMask before its pooling layer.

    keep = sigmoid(30) rounds to 1 in float32 and there is no energy loss,
    so outputs equal the baseline's; the layer gives the deletion curve a
    place to cut (magnitude, random and Grad-CAM orders).
    """
    import keras

    import keras_ersm

    pool = next(
        layer
        for layer in baseline.layers
        if isinstance(layer, keras.layers.GlobalAveragePooling2D)
    )
    point = pool.input._keras_history.operation.name
    return keras_ersm.models.insert_energy_masks(
        baseline,
        point,
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(-30.0),
        energy_regularizer=None,
        name="baseline_pass_through",
    )


# ----------------------------------------------------------------------------
# Evaluation and report


def _stage(text, verbose):
    """Prints the name of an evaluation stage; the progress bar follows.

    On a terminal (verbose 1) the bar redraws its own line below; otherwise
    (verbose 2) its one summary line ends this one.
    """
    if verbose == 1:
        print(f"  {text}", flush=True)
    elif verbose == 2:
        print(f"  {text}:", end=" ", flush=True)
    else:
        print(f"  {text}", flush=True)


def evaluate(name, model, test, seed, batch_size, verbose=0):
    """Clean accuracy, occlusion, deletion curves and mask figures of a model."""
    import keras_ersm
    from keras_ersm import evaluation

    x, y, masks = test
    result = {"name": name}
    start = time.perf_counter()
    _stage("clean accuracy", verbose)
    result["clean_accuracy"] = 100.0 * float(
        np.mean(
            np.argmax(model.predict(x, batch_size=batch_size, verbose=verbose), -1) == y
        )
    )
    _stage("accuracy under occlusion", verbose)
    occlusion = evaluation.occlusion_robustness(
        model,
        (x, y),
        object_masks=masks,
        seed=seed,
        batch_size=batch_size,
        verbose=verbose,
    )
    result["occlusion"] = occlusion.to_dict()
    result["occlusion_mean"] = float(np.mean(list(occlusion.accuracy.values())))
    figures = {"occlusion": occlusion}
    has_mask = bool(keras_ersm.models.energy_mask_layers(model))
    if has_mask:
        orders = ("energy", "magnitude", "random", "grad_cam")
        target = model
    else:
        orders = ("magnitude", "random", "grad_cam")
        target = pass_through_mask(model)
    _stage(f"deletion curves ({', '.join(orders)})", verbose)
    deletion = evaluation.deletion_curve(
        target,
        (x, y),
        orders=orders,
        seed=seed,
        batch_size=batch_size,
        verbose=verbose,
    )
    result["deletion"] = deletion.to_dict()
    figures["deletion"] = deletion
    if has_mask:
        _stage("keep-map statistics", verbose)
        stats = evaluation.mask_statistics(
            model, x, batch_size=batch_size, verbose=verbose
        )
        result["mask_statistics"] = stats.to_dict()
        figures["mask_statistics"] = stats
        if masks is not None:
            _stage("localization of the keep map and Grad-CAM", verbose)
            local = evaluation.mask_localization(
                model, x, masks, batch_size=batch_size, verbose=verbose
            )
            result["localization"] = local.to_dict()
            figures["localization"] = local
    result["evaluation_seconds"] = time.perf_counter() - start
    return result, figures


def _fmt(value, digits=1):
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


SMOKE_TEST_NOTE = (
    "**Smoke test (`--quick`): {epochs} epoch(s) on {train_size} images, "
    "evaluated on {eval_size}. These numbers only show that the pipeline "
    "runs; they are not results.** Run without `--quick` for a comparison."
)
OCCLUSION_LEGEND = (
    "Settings: *Cutout* hides square patches of the given side at random "
    "places until about the given share of the image is covered; "
    "*Hide-and-Seek* splits the image into cells of the given side and hides "
    "each with the given probability; *object hidden* hides the pixels of "
    "the object mask, *background hidden* everything but the object (only "
    "with object masks). Hidden pixels take each image's mean colour."
)


def markdown_report(report):
    from keras_ersm.visualization import occlusion_label

    ersm, base = report["results"]["ersm"], report["results"]["baseline"]
    run = report["run"]

    def row(label, *values, digits=1):
        return "| " + " | ".join([label, *(_fmt(v, digits) for v in values)]) + " |"

    auc_e, auc_b = ersm["deletion"]["auc"], base["deletion"]["auc"]
    lines = ["# ERSM vs baseline", ""]
    if run.get("quick"):
        lines += ["> " + SMOKE_TEST_NOTE.format(**run), ""]
    lines += [
        f"{run['dataset_note']}. Backbone `{run['backbone']}`, "
        f"{run['epochs']} epoch(s) on {run['train_size']} images, evaluated on "
        f"{run['eval_size']} test images; backend {run['backend']}. *ERSM*: "
        "the backbone, an `EnergyMask` on its last feature map, pooling and "
        "a Dense layer; *baseline*: the same without the mask.",
        "",
        "| metric | ERSM | baseline |",
        "| --- | ---: | ---: |",
        row("clean accuracy (%)", ersm["clean_accuracy"], base["clean_accuracy"]),
        row(
            "occlusion accuracy, mean over settings (%)",
            ersm["occlusion_mean"],
            base["occlusion_mean"],
        ),
    ]
    for order in ("energy", "magnitude", "random", "grad_cam"):
        lines.append(
            row(
                f"deletion AUC, {order} order (LeRF, %)",
                auc_e.get(order),
                auc_b.get(order),
            )
        )
    stats = ersm.get("mask_statistics")
    if stats:
        lines += [
            row("mean keep (no mask: 1)", stats["mean_keep"], 1.0, digits=3),
            row(
                "active fraction (keep > 0.5)",
                stats["active_fraction"],
                1.0,
                digits=3,
            ),
            row("normalised keep entropy", stats["entropy"], 1.0, digits=3),
        ]
    lines += [
        row("training time (s)", ersm["train_seconds"], base["train_seconds"]),
        row("parameters", ersm["params"], base["params"], digits=0),
        "",
        "Deletion AUC: accuracy (%) integrated over the deleted fraction of "
        "the tokens at the mask layer, least relevant first (higher is better). "
        "The baseline is cut at the same place with a pass-through mask, so it "
        "has no energy order.",
        "",
    ]
    local = ersm.get("localization")
    if local:
        keep = local["scores"]["keep"]
        cam = local["scores"].get("grad_cam", {})
        uniform = local["object_fraction"]
        lines += [
            "## Localization: does the map land on the object?",
            "",
            "| metric | ERSM keep map | Grad-CAM (ERSM model) | uniform map |",
            "| --- | ---: | ---: | ---: |",
            row(
                "share of the map's mass inside the object",
                keep["mass_inside"],
                cam.get("mass_inside"),
                uniform,
                digits=3,
            ),
            row(
                "pointing game (the map's peak is on the object)",
                keep["pointing_game"],
                cam.get("pointing_game"),
                None,
                digits=3,
            ),
            row(
                "IoU of map > 0.5 with the object",
                keep["iou"],
                cam.get("iou"),
                None,
                digits=3,
            ),
            "",
            "Both maps come from the ERSM model on the test images, compared "
            "with the benchmark's object masks (Grad-CAM at the mask's "
            "output, for the predicted class, divided by its maximum). A "
            f"uniform map puts {uniform:.3f} of its mass inside the object: "
            "the share of the image the object covers.",
            "",
        ]
    lines += [
        "## Occlusion (accuracy %)",
        "",
        "| setting | ERSM | baseline |",
        "| --- | ---: | ---: |",
        row(
            occlusion_label("clean"),
            ersm["occlusion"]["clean_accuracy"],
            base["occlusion"]["clean_accuracy"],
        ),
    ]
    for setting, value in ersm["occlusion"]["accuracy"].items():
        lines.append(
            row(
                occlusion_label(setting),
                value,
                base["occlusion"]["accuracy"].get(setting),
            )
        )
    lines += [
        "",
        OCCLUSION_LEGEND,
        "",
        "## Figures",
        "",
        "- `deletion_curves.png`: accuracy as tokens are deleted at the mask, "
        "per deletion order, ERSM (left) and baseline (right);",
        "- `occlusion.png`: the occlusion table as bars;",
        "- `keep_overlay.png`: the ERSM mask's keep maps over eight test images;",
        "- `mask_histogram.png`: how much of each test image the ERSM mask "
        "keeps" + (";" if local else "."),
    ]
    if local:
        lines.append("- `localization.png`: the localization table as bars.")
    lines += [
        "",
        "Models: `ersm.keras`, `baseline.keras`.",
        "",
        "## Run",
        "",
        f"- command: `{run['command']}`",
        f"- machine: {run['machine']}",
        f"- versions: {run['versions']}",
        f"- total time: {run['total_seconds']:.0f} s",
        "",
    ]
    return "\n".join(lines)


def save_plots(stage, figures, test, ersm_model, batch_size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    import keras_ersm
    from keras_ersm import visualization

    ersm_figs, base_figs = figures["ersm"], figures["baseline"]
    written = []

    def save(figure, filename):
        figure.savefig(os.path.join(stage, filename), dpi=110)
        written.append(filename)

    # Deletion curves side by side, same y axis, one colour per order.
    figure = Figure(figsize=(11, 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2, sharey=True)
    for ax, label, figs in zip(
        axes, ("ERSM", "Baseline"), (ersm_figs, base_figs), strict=True
    ):
        visualization.plot_deletion_curves(
            figs["deletion"], ax=ax, title=f"{label}: deletion curves (LeRF)"
        )
    axes[1].set_ylabel("")
    save(figure, "deletion_curves.png")

    occlusion = {"ERSM": ersm_figs["occlusion"], "baseline": base_figs["occlusion"]}
    save(visualization.plot_occlusion(occlusion), "occlusion.png")

    x = test[0][:8]
    keep = keras_ersm.models.keep_maps(
        ersm_model,
        x,
        layer=keras_ersm.models.energy_mask_layers(ersm_model)[-1],
        batch_size=batch_size,
    )
    figure = visualization.overlay_keep(
        x,
        keep,
        max_images=8,
        title="ERSM keep maps on the backbone's last feature map, test images",
    )
    save(figure, "keep_overlay.png")

    figure = visualization.plot_mask_histogram(
        ersm_figs["mask_statistics"], title="ERSM mask: mean keep per test image"
    )
    save(figure, "mask_histogram.png")
    if "localization" in ersm_figs:
        figure = visualization.plot_localization(
            ersm_figs["localization"],
            title="Does the ERSM model's map land on the object?",
        )
        save(figure, "localization.png")
    return written


def _versions():
    import keras

    import keras_ersm

    versions = {"keras_ersm": keras_ersm.__version__, "keras": keras.__version__}
    for module in ("jax", "tensorflow", "torch", "keras_cv", "keras_hub"):
        if module in sys.modules:
            versions[module] = getattr(sys.modules[module], "__version__", "?")
    return ", ".join(f"{k} {v}" for k, v in versions.items())


def _machine():
    cores = os.cpu_count()
    text = f"{platform.machine()} {platform.system()}, {cores} CPU cores visible"
    if hasattr(os, "getloadavg"):
        text += f", load average {os.getloadavg()[0]:.1f} at the end"
    try:
        import keras

        if keras.backend.backend() == "jax":
            import jax

            text += f", JAX devices: {[d.device_kind for d in jax.devices()]}"
    except Exception:  # the description is best effort
        pass
    return text


# ----------------------------------------------------------------------------
# Main


def resolve_verbose(verbose, stream=None):
    """`auto`: progress bars on a terminal, one line per epoch otherwise."""
    if verbose != "auto":
        return verbose
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return 1 if callable(isatty) and isatty() else 2


def import_tensorflow_quietly():
    """Imports TensorFlow (when installed) without its start-up noise.

    TensorFlow is imported anyway by the TensorFlow backend, KerasCV,
    KerasHub and tensorflow-datasets. Here its import and device discovery
    run with the stderr file descriptor sent to a temporary file; the lines
    that are not start-up noise (`_STARTUP_NOISE`) are printed afterwards,
    so real warnings still show.
    """
    import importlib.util

    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # where cuInit complains
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
    for line in text.splitlines():
        if line.strip() and not any(noise in line for noise in _STARTUP_NOISE):
            print(line, file=sys.stderr)


def quiet_backend_logs():
    """Hides TensorFlow's Python-side start-up and retracing warnings.

    Only the `tensorflow` logger (as `tf.get_logger()`) and only below
    ERROR: the main job's own evaluation calls `predict_on_batch` with a few
    batch shapes on purpose, which TensorFlow reports as retracing.
    """
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def run(args, stage):
    import_tensorflow_quietly()
    quiet_backend_logs()
    import keras

    import keras_ersm

    verbose = resolve_verbose(args.verbose)
    started = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    train, test, info = load_data(args)
    epochs = run_settings(args, info["name"])[2]
    line = f"Dataset: {info['note']}"
    if info.get("cifar10_unavailable"):
        line += f" (CIFAR-10 not used: {info['cifar10_unavailable']})"
    print(line, flush=True)
    if args.quick:
        print(
            "Smoke test (--quick): the numbers below only show that the "
            "pipeline runs; they are not results.",
            flush=True,
        )
    x_train, y_train, _ = train
    num_classes = info["num_classes"]

    backbone = build_backbone(args.backbone, x_train.shape[1:])
    models = {
        "ersm": keras_ersm.models.build_classifier(
            backbone,
            num_classes,
            mask_at="output",
            freeze_backbone=False,
            patch_size=args.patch_size,
            coherence_steps=args.coherence_steps,
            padding="same",
            name="ersm_classifier",
        ),
        "baseline": keras_ersm.models.build_classifier(
            backbone,
            num_classes,
            mask_at=None,
            freeze_backbone=False,
            name="baseline_classifier",
        ),
    }
    for model in models.values():
        set_batchnorm_momentum(model, args.bn_momentum)
    results, figures = {}, {}
    for name, model in models.items():
        print(
            f"\nTraining {name} ({model.count_params():,} parameters, "
            f"{epochs} epoch(s), {len(x_train)} images)",
            flush=True,
        )
        keras.utils.set_random_seed(args.seed)
        model.compile(
            optimizer=keras.optimizers.Adam(args.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        start = time.perf_counter()
        history = model.fit(
            x_train,
            y_train,
            epochs=epochs,
            batch_size=args.batch_size,
            validation_data=test[:2],
            verbose=verbose,
        )
        seconds = time.perf_counter() - start
        print(f"Evaluating {name} on {len(test[0])} test images", flush=True)
        result, figs = evaluate(
            name, model, test, args.seed, args.batch_size, verbose=verbose
        )
        result["train_seconds"] = seconds
        result["params"] = model.count_params()
        result["history"] = {
            k: [float(v) for v in values] for k, values in history.history.items()
        }
        results[name], figures[name] = result, figs
        model.save(os.path.join(stage, f"{name}.keras"))

    plots = save_plots(stage, figures, test, models["ersm"], args.batch_size)
    report = {
        "run": {
            "command": f"KERAS_BACKEND={keras.backend.backend()} python "
            + " ".join(shlex.quote(a) for a in args.command_line),
            "backend": keras.backend.backend(),
            "dataset": info["name"],
            "dataset_note": info["note"][0].upper() + info["note"][1:],
            "cifar10_unavailable": info.get("cifar10_unavailable"),
            "backbone": args.backbone,
            "epochs": epochs,
            "batch_size": args.batch_size,
            "patch_size": args.patch_size,
            "coherence_steps": args.coherence_steps,
            "learning_rate": args.learning_rate,
            "bn_momentum": args.bn_momentum,
            "train_size": int(len(x_train)),
            "eval_size": int(len(test[0])),
            "seed": args.seed,
            "quick": args.quick,
            "machine": _machine(),
            "versions": _versions(),
            "total_seconds": time.perf_counter() - started,
        },
        "results": results,
        "files": {"plots": plots, "models": list(MODEL_FILES)},
    }
    with open(os.path.join(stage, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    markdown = markdown_report(report)
    with open(os.path.join(stage, "report.md"), "w") as f:
        f.write(markdown)
    return markdown, plots


def publish(stage, output_dir, plots):
    """Moves the staged files into `output_dir`, the reports last.

    Old reports go first, and a plot of an earlier run that this run did
    not make (e.g. `localization.png` after a run with object masks) is
    removed, so the directory never mixes two runs under a new report.
    """
    optional = [f for f in (*PLOT_FILES, "localization.png") if f not in plots]
    for filename in [*REPORT_FILES, *optional]:
        path = os.path.join(output_dir, filename)
        if os.path.exists(path):
            os.remove(path)
    for filename in [*MODEL_FILES, *plots, *REPORT_FILES]:
        os.replace(os.path.join(stage, filename), os.path.join(output_dir, filename))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = sys.argv if argv is None else ["examples/train_cifar.py", *argv]
    if not args.learning_rate > 0:
        parser.error(
            f"argument --learning-rate: invalid value {args.learning_rate!r}; "
            "expected a positive number"
        )
    if args.spurious_cue and args.dataset == "cifar10":
        parser.error("argument --spurious-cue: only applies to --dataset cluttered")
    problem = check_output_dir(args.output_dir)
    if problem is not None:
        parser.error(f"argument --output-dir: cannot write there: {problem}")
    stage = tempfile.mkdtemp(prefix=".train_cifar-", dir=args.output_dir)
    try:
        markdown, plots = run(args, stage)
        publish(stage, args.output_dir, plots)
    except KeyboardInterrupt:
        print(
            "\nInterrupted; nothing was written to the output directory.",
            file=sys.stderr,
        )
        return 130
    except Exception as error:  # one clear line, then the traceback for debugging
        print(
            f"train_cifar.py: error: {type(error).__name__}: {error}", file=sys.stderr
        )
        if os.environ.get("KERAS_ERSM_DEBUG"):
            raise
        return 1
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print("\n" + markdown.split("\n## Occlusion")[0])
    print(
        f"Wrote {', '.join([*REPORT_FILES, *plots, *MODEL_FILES])} "
        f"to {os.path.abspath(args.output_dir)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
