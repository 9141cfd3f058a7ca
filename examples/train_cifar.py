"""Train an ERSM classifier and its unmasked baseline, evaluate both, report.

This is keras_ersm's main job. It trains the same backbone twice, once with
an `EnergyMask` on its last feature map (the paper's recipe: backbone ->
EnergyMask -> global average pooling -> Dense) and once without it, then
evaluates each with `keras_ersm.evaluation.evaluate`: clean accuracy,
occlusion, deletion curves (with AUCs), keep-map statistics and, when the
data has object masks, whether the keep map, the kept map (keep times
token norm) and Grad-CAM land on the object. It writes to `--output-dir`:
`report.md` (the tables to read first),
`report.json` (every number), the figures of `EvaluationResult.save_plots`
(`deletion_curves.png`, `occlusion.png`, `keep_overlay.png`,
`mask_histogram.png`, and with object masks `localization.png` and
`keep_vs_grad_cam.png`) and the models `ersm.keras`, `baseline.keras`.
Files are staged and moved into place at the end, the reports last, so an
interrupted run never leaves a complete-looking report behind.

Data (`--dataset`): `cifar10` (tensorflow-datasets), `cluttered` (the bundled
offline benchmark with object masks, `keras_ersm.datasets.make_cluttered`),
or `auto` (CIFAR-10 when already prepared in `--data-dir`, else the bundled
benchmark; `auto` never downloads). Offline, the defaults finish in a few
minutes on a laptop CPU:

    KERAS_BACKEND=jax python examples/train_cifar.py
    KERAS_BACKEND=jax python examples/train_cifar.py --quick  # a smoke test
    python examples/train_cifar.py --dataset cifar10 --epochs 30 \\
        --backbone hub_resnet_small  # worth a GPU
"""

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _backbones import BACKBONES, build_backbone, set_batchnorm_momentum  # noqa: E402
from _support import describe_run, load_data, markdown_report, run_settings  # noqa: E402

DATASETS = ("auto", "cifar10", "cluttered")
REPORT_FILES = ("report.json", "report.md")
PLOT_FILES = (
    "deletion_curves.png",
    "occlusion.png",
    "keep_overlay.png",
    "mask_histogram.png",
)
OPTIONAL_PLOT_FILES = ("localization.png", "keep_vs_grad_cam.png")  # object masks
MODEL_FILES = ("ersm.keras", "baseline.keras")


def _number(kind, expected, valid):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError(
                f"invalid value {text!r}; expected {expected}"
            )
        return value

    return parse


_positive_int = _number(int, "an integer >= 1", lambda v: v >= 1)
_non_negative_int = _number(int, "an integer >= 0", lambda v: v >= 0)
_fraction = _number(float, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)


def _verbosity(text):
    if text == "auto" or text in ("0", "1", "2"):
        return text if text == "auto" else int(text)
    raise argparse.ArgumentTypeError(
        f"invalid value {text!r}; expected auto, 0, 1 or 2"
    )


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows `(default: ...)` once: not where the help already says it."""

    def _get_help_string(self, action):
        text, default = action.help or "", action.default
        if "(default" in text or default is None or default is False:
            return text
        return super()._get_help_string(action)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="train_cifar.py",
        description="Train an ERSM classifier and the same model without the "
        "mask, evaluate both (accuracy, occlusion, deletion curves, mask "
        "statistics, localization) and write report.md, report.json, PNG plots "
        "and .keras models.",
        formatter_class=_HelpFormatter,
    )
    add = parser.add_argument
    add("--dataset", choices=DATASETS, default="auto",
        help="auto: CIFAR-10 when already prepared in --data-dir (never "
        "downloads), else the bundled cluttered benchmark; cifar10 downloads "
        "when needed")  # fmt: skip
    add("--backbone", choices=BACKBONES, default="cv_resnet_small",
        help="cv_resnet_small: KerasCV ResNetV2Backbone (small config); "
        "hub_resnet_small: KerasHub ResNetBackbone (small config); tiny: a "
        "4-layer Keras CNN; mobilenet_v3_small, resnet50: keras.applications "
        "(weights=None)")  # fmt: skip
    add("--epochs", type=_positive_int, default=None,
        help="training epochs (default: 6 on cluttered, 10 on cifar10, 1 with "
        "--quick)")  # fmt: skip
    add("--batch-size", type=_positive_int, default=64,
        help="images per training and evaluation batch")  # fmt: skip
    add("--patch-size", type=_positive_int, default=1,
        help="EnergyMask token side on the backbone's last feature map")  # fmt: skip
    add("--coherence-steps", type=_non_negative_int, default=0,
        help="mean-field steps of coherent ERSM (0: the reference layer)")  # fmt: skip
    add("--learning-rate", type=float, default=2e-3, help="Adam learning rate")
    add("--bn-momentum", type=_fraction, default=0.9,
        help="momentum of every BatchNormalization layer; Keras' 0.99 lags "
        "behind in short runs, so inference accuracy trails training")  # fmt: skip
    add("--train-size", type=_positive_int, default=None,
        help="training images (default: 5000 on cluttered, all of CIFAR-10, "
        "256 with --quick)")  # fmt: skip
    add("--eval-size", type=_positive_int, default=None,
        help="test images for the evaluations (default: 500 on cluttered, "
        "1000 on cifar10, 64 with --quick)")  # fmt: skip
    add("--spurious-cue", type=_fraction, default=0.0,
        help="cluttered only: probability that a training image's background "
        "hue gives its class away (never at test time)")  # fmt: skip
    add("--data-dir", default=None,
        help="tensorflow-datasets data_dir for CIFAR-10 (default: "
        "tensorflow-datasets' own, ~/tensorflow_datasets)")  # fmt: skip
    add("--output-dir", default=os.path.join("runs", "cifar"),
        help="folder for the report, plots and models (created if needed; "
        "files of an earlier run there are replaced)")  # fmt: skip
    add("--quick", action="store_true",
        help="a smoke test of the pipeline (256 training and 64 evaluation "
        "images, 1 epoch): its numbers are not results")  # fmt: skip
    add("--seed", type=_non_negative_int, default=0,
        help="seed of the weights, the data order, the generated benchmark "
        "and the random evaluations")  # fmt: skip
    add("--verbose", type=_verbosity, default="auto",
        help="progress of training and evaluation: 0 silent, 1 progress bars, "
        "2 one line per epoch and per evaluation stage; auto: 1 on a "
        "terminal, 2 when the output goes to a file or pipe")  # fmt: skip
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


def resolve_verbose(verbose, stream=None):
    """`auto`: progress bars on a terminal, one line per epoch otherwise."""
    if verbose != "auto":
        return verbose
    isatty = getattr(sys.stdout if stream is None else stream, "isatty", None)
    return 1 if callable(isatty) and isatty() else 2


def run(args, stage):
    from _support import import_tensorflow_quietly

    import_tensorflow_quietly()  # before KerasCV, KerasHub or the TF backend
    # TensorFlow's retracing warnings: evaluation uses a few batch shapes.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
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
        print("Smoke test (--quick): the numbers below only show that the "
              "pipeline runs; they are not results.", flush=True)  # fmt: skip
    (x_train, y_train, _), (x_test, y_test, masks) = train, test
    backbone = build_backbone(args.backbone, x_train.shape[1:])
    mask_options = dict(patch_size=args.patch_size, padding="same",
                        coherence_steps=args.coherence_steps)  # fmt: skip
    results, evaluations = {}, {}
    for name, label, mask_at in (
        ("ersm", "ERSM", "output"),
        ("baseline", "baseline", None),
    ):
        model = keras_ersm.models.build_classifier(
            backbone, info["num_classes"], mask_at=mask_at, freeze_backbone=False,
            name=f"{name}_classifier", **(mask_options if mask_at else {}),
        )  # fmt: skip
        set_batchnorm_momentum(model, args.bn_momentum)
        print(f"\nTraining {name} ({model.count_params():,} parameters, "
              f"{epochs} epoch(s), {len(x_train)} images)", flush=True)  # fmt: skip
        keras.utils.set_random_seed(args.seed)
        model.compile(
            optimizer=keras.optimizers.Adam(args.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        start = time.perf_counter()
        history = model.fit(x_train, y_train, epochs=epochs, verbose=verbose,
                            batch_size=args.batch_size,
                            validation_data=(x_test, y_test))  # fmt: skip
        seconds = time.perf_counter() - start
        print(f"Evaluating {name} on {len(x_test)} test images", flush=True)
        evaluations[name] = keras_ersm.evaluation.evaluate(
            model, (x_test, y_test), object_masks=masks, name=label,
            batch_size=args.batch_size, seed=args.seed, verbose=verbose,
        )  # fmt: skip
        results[name] = {
            **evaluations[name].to_dict(),
            "train_seconds": seconds,
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        }
        model.save(os.path.join(stage, f"{name}.keras"))

    plots = evaluations["ersm"].save_plots(stage, baseline=evaluations["baseline"])
    report = {
        "run": describe_run(args, info, epochs, len(x_train), len(x_test), started),
        "results": results,
        "files": {"plots": plots, "models": list(MODEL_FILES)},
    }
    with open(os.path.join(stage, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    markdown = markdown_report(
        report, evaluations["ersm"], evaluations["baseline"], plots
    )
    with open(os.path.join(stage, "report.md"), "w") as f:
        f.write(markdown)
    return markdown, plots


def publish(stage, output_dir, plots):
    """Moves the staged files into `output_dir`, the reports last.

    Old reports go first, and a plot of an earlier run that this run did
    not make (e.g. `localization.png` after a run with object masks) is
    removed, so the directory never mixes two runs under a new report.
    """
    optional = [f for f in (*PLOT_FILES, *OPTIONAL_PLOT_FILES) if f not in plots]
    for filename in [*REPORT_FILES, *optional]:
        if os.path.exists(os.path.join(output_dir, filename)):
            os.remove(os.path.join(output_dir, filename))
    for filename in [*MODEL_FILES, *plots, *REPORT_FILES]:
        os.replace(os.path.join(stage, filename), os.path.join(output_dir, filename))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = sys.argv if argv is None else ["examples/train_cifar.py", *argv]
    if not args.learning_rate > 0:
        parser.error(f"argument --learning-rate: invalid value {args.learning_rate!r}; "
                     "expected a positive number")  # fmt: skip
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
        print("\nInterrupted; nothing was written to the output directory.",
              file=sys.stderr)  # fmt: skip
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
    print(f"Wrote {', '.join([*REPORT_FILES, *plots, *MODEL_FILES])} "
          f"to {os.path.abspath(args.output_dir)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
