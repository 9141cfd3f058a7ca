"""Helpers of `train_cifar.py`: its data (with the offline fallback) and the
description of the run (machine, versions)."""

import os
import platform
import shlex
import sys
import time

# Sizes per dataset: (train images, evaluation images, epochs).
_DEFAULTS = {"cluttered": (5000, 500, 6), "cifar10": (None, 1000, 10)}
_QUICK = (256, 64, 1)


def import_tensorflow_quietly():
    """Runs `keras_ersm._quiet.import_tensorflow_quietly`, loaded by path.

    Importing anything from the `keras_ersm` package imports Keras, which on
    the TensorFlow backend imports TensorFlow with its start-up lines; the
    standard-library-only `_quiet.py` is therefore loaded from its file.
    """
    import importlib.util

    package = importlib.util.find_spec("keras_ersm")  # found, not imported
    path = os.path.join(package.submodule_search_locations[0], "_quiet.py")
    spec = importlib.util.spec_from_file_location("_keras_ersm_quiet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.import_tensorflow_quietly()


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
        load = dict(data_dir=args.data_dir, download=args.dataset == "cifar10")
        try:
            train = datasets.load_cifar10(
                "train" if train_size is None else f"train[:{train_size}]", **load
            )
            test = datasets.load_cifar10(f"test[:{eval_size}]", **load)
            info = {"name": "cifar10", "num_classes": 10,
                    "note": "CIFAR-10 (tensorflow-datasets)"}  # fmt: skip
            return (*train, None), (*test, None), info
        except (datasets.DatasetUnavailableError, ImportError) as error:
            if args.dataset == "cifar10":
                raise RuntimeError(str(error).splitlines()[0]) from error
            reason = str(error).splitlines()[0]
    train_size, eval_size, _ = run_settings(args, "cluttered")
    options = dict(spurious_cue=args.spurious_cue, seed=args.seed)
    train = datasets.make_cluttered(train_size, split="train", **options)
    test = datasets.make_cluttered(eval_size, split="test", **options)
    info = {"name": "cluttered", "num_classes": 10, "cifar10_unavailable": reason,
            "note": "the bundled cluttered-glyphs benchmark "
            "(keras_ersm.datasets.make_cluttered)",
            "spurious_cue": args.spurious_cue}  # fmt: skip
    return train, test, info


SMOKE_TEST_NOTE = (
    "**Smoke test (`--quick`): {epochs} epoch(s) on {train_size} images, "
    "evaluated on {eval_size}. These numbers only show that the pipeline "
    "runs; they are not results.** Run without `--quick` for a comparison."
)


def versions():
    names = (
        "keras_ersm",
        "keras",
        "jax",
        "tensorflow",
        "torch",
        "keras_cv",
        "keras_hub",
    )
    found = {
        m: getattr(sys.modules[m], "__version__", "?")
        for m in names
        if m in sys.modules
    }
    return ", ".join(f"{k} {v}" for k, v in found.items())


def machine():
    text = (
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores visible"
    )
    if hasattr(os, "getloadavg"):
        text += f", load average {os.getloadavg()[0]:.1f} at the end"
    if "jax" in sys.modules:
        text += (
            f", JAX devices: {[d.device_kind for d in sys.modules['jax'].devices()]}"
        )
    return text


def describe_run(args, info, epochs, train_size, eval_size, started):
    """The `run` section of report.json: command, settings, machine, time."""
    import keras

    backend = keras.backend.backend()
    return {
        "command": f"KERAS_BACKEND={backend} python "
        + " ".join(shlex.quote(a) for a in args.command_line),
        "backend": backend, "dataset": info["name"],
        "dataset_note": info["note"][0].upper() + info["note"][1:],
        "cifar10_unavailable": info.get("cifar10_unavailable"),
        "backbone": args.backbone, "epochs": epochs, "batch_size": args.batch_size,
        "patch_size": args.patch_size, "coherence_steps": args.coherence_steps,
        "learning_rate": args.learning_rate, "bn_momentum": args.bn_momentum,
        "train_size": int(train_size), "eval_size": int(eval_size),
        "seed": args.seed, "quick": args.quick, "machine": machine(),
        "versions": versions(), "total_seconds": time.perf_counter() - started,
    }  # fmt: skip


def markdown_report(report, ersm, baseline, plots):
    """report.md: the run's header, then `ersm.to_markdown(baseline=...)`."""
    run = report["run"]
    lines = ["# ERSM vs baseline", ""]
    if run["quick"]:
        lines += ["> " + SMOKE_TEST_NOTE.format(**run), ""]
    seconds = [report["results"][k]["train_seconds"] for k in ("ersm", "baseline")]
    lines += [
        f"{run['dataset_note']}. Backbone `{run['backbone']}`, {run['epochs']} "
        f"epoch(s) on {run['train_size']} images, evaluated on {run['eval_size']} "
        f"test images; backend {run['backend']}. *ERSM*: the backbone, an "
        "`EnergyMask` on its last feature map, pooling and a Dense layer; "
        "*baseline*: the same without the mask.",
        "",
        ersm.to_markdown(baseline=baseline, figures=plots),
        "Models: `ersm.keras`, `baseline.keras`; training time "
        f"{seconds[0]:.0f} s (ERSM) and {seconds[1]:.0f} s (baseline).",
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
