"""End to end: examples/train_cifar.py on a tiny setting, on the current backend.

The example runs in a subprocess with the current KERAS_BACKEND; the test
checks that every report file is written and parses. Bad input (unknown
dataset or backbone, 0 epochs, an output directory that cannot be written)
must exit non-zero with a clear message and write nothing.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_ersm

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_cifar.py"
BACKEND = keras.backend.backend()


def _load_example():
    spec = importlib.util.spec_from_file_location("train_cifar", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Backend start-up noise the main job must not print (issue: a newcomer's log).
NOISE = (
    "oneDNN",
    "cuda drivers",
    "cuInit",
    "dataset_info.json",
    "retracing",
    "absl::InitializeLog",
    "cpu_feature_guard",
)


def _run(*args, timeout=600):
    # The job's own quieting is under test: none of the suite's settings.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")
    }
    env["KERAS_BACKEND"] = BACKEND
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.mark.slow
def test_end_to_end_writes_every_report_file(tmp_path):
    out = tmp_path / "run"
    proc = _run(
        "--dataset", "cluttered", "--backbone", "tiny", "--quick",
        "--train-size", "128", "--eval-size", "32", "--batch-size", "32",
        "--patch-size", "2", "--coherence-steps", "1",
        "--output-dir", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Dataset: the bundled cluttered-glyphs benchmark" in proc.stdout
    assert "Smoke test (--quick)" in proc.stdout
    # stdout is a pipe: one line per epoch and per evaluation stage, no
    # progress bar redrawn with backspaces into one huge line.
    assert "\b" not in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) < 400
    stages = [line for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert any(s.startswith("  deletion curves") and "/" in s for s in stages)
    assert any(s.startswith("  accuracy under occlusion") for s in stages)
    for noise in NOISE:
        assert noise not in proc.stdout + proc.stderr, (noise, proc.stderr[-2000:])
    example = _load_example()
    expected = [
        *example.REPORT_FILES, *example.PLOT_FILES, *example.MODEL_FILES,
        *example.OPTIONAL_PLOT_FILES,
    ]  # fmt: skip
    assert sorted(os.listdir(out)) == sorted(expected)  # no staging left

    report = json.loads((out / "report.json").read_text())
    assert report["run"]["backend"] == BACKEND
    assert report["run"]["dataset"] == "cluttered"
    assert report["run"]["epochs"] == 1 and report["run"]["train_size"] == 128
    ersm, base = report["results"]["ersm"], report["results"]["baseline"]
    for result in (ersm, base):
        assert 0.0 <= result["clean_accuracy"] <= 100.0
        assert "object" in result["occlusion"]["accuracy"]
        assert result["deletion"]["fractions"][0] == 0.0
        assert result["deletion"]["fractions"][-1] == 1.0
    assert set(ersm["deletion"]["auc"]) == {
        "energy",
        "kept",
        "magnitude",
        "random",
        "grad_cam",
    }
    assert set(base["deletion"]["auc"]) == {"magnitude", "random", "grad_cam"}
    assert 0.0 <= ersm["mask_statistics"]["mean_keep"] <= 1.0
    assert set(ersm["localization"]["scores"]) == {"keep", "kept", "grad_cam"}

    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# ERSM vs baseline\n\n> **Smoke test (`--quick`)")
    assert "| clean accuracy (%) |" in markdown
    # The keep and kept maps next to Grad-CAM of both models and a uniform map.
    assert (
        "| metric | ERSM keep map | ERSM kept map | Grad-CAM (ERSM model) | "
        "Grad-CAM (baseline model) | uniform map |"
    ) in markdown
    assert "*Hide-and-Seek* splits" in markdown  # the occlusion legend
    assert "cutout_4px" not in markdown and "| object hidden |" in markdown
    assert ersm["mask_statistics"]["layer"] not in markdown  # roles, not names
    assert f"{ersm['clean_accuracy']:.1f}" in markdown

    import matplotlib.image

    for name in [*example.PLOT_FILES, *example.OPTIONAL_PLOT_FILES]:
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 100, name

    x, _, _ = keras_ersm.datasets.make_cluttered(4, split="test")
    for name in example.MODEL_FILES:
        model = keras.saving.load_model(out / name)
        assert model.predict(x, verbose=0).shape == (4, 10)
        assert np.all(np.isfinite(model.predict(x, verbose=0)))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet'"),
        (["--backbone", "vgg99"], "argument --backbone: invalid choice: 'vgg99'"),
        (["--epochs", "0"], "argument --epochs: invalid value '0'"),
        (["--batch-size", "-3"], "argument --batch-size: invalid value '-3'"),
        (["--spurious-cue", "2"], "argument --spurious-cue: invalid value '2'"),
    ],
)
def test_bad_arguments_exit_non_zero_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    proc = _run(*args, "--output-dir", str(out), timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not out.exists()


def test_help_shows_every_default_once():
    proc = _run("--help", timeout=120)
    assert proc.returncode == 0
    options = proc.stdout.split("options:")[1]
    # One block per option: its help, then "(default: ...)" at most once.
    blocks = [b for b in options.split("\n  --")[1:] if not b.startswith("help")]
    assert len(blocks) == 16
    for block in blocks:
        name = block.split()[0]
        text = " ".join(block.split())
        if name != "quick":
            assert text.count("(default") == 1, text
    assert "(default: runs/cifar)" in proc.stdout
    assert "(default: None)" not in proc.stdout


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    proc = _run("--output-dir", str(blocker / "run"), timeout=120)
    assert proc.returncode == 2
    assert "argument --output-dir: cannot write there" in proc.stderr
    assert blocker.read_text() == "not a directory"


def test_failure_midway_leaves_no_report(tmp_path, monkeypatch, capsys):
    example = _load_example()
    out = tmp_path / "run"
    out.mkdir()
    (out / "old_notes.txt").write_text("kept")

    def failing_run(args, stage):
        (Path(stage) / "ersm.keras").write_text("half written")
        raise RuntimeError("out of memory")

    monkeypatch.setattr(example, "run", failing_run)
    assert example.main(["--output-dir", str(out)]) == 1
    assert (
        "train_cifar.py: error: RuntimeError: out of memory" in capsys.readouterr().err
    )
    assert sorted(os.listdir(out)) == ["old_notes.txt"]  # staging removed


def test_auto_falls_back_to_the_bundled_benchmark_offline(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    example = _load_example()
    args = example.build_parser().parse_args(
        [
            "--dataset",
            "auto",
            "--data-dir",
            str(tmp_path),
            "--quick",
            "--eval-size",
            "8",
        ]
    )
    # The suite blocks the network, so CIFAR-10 cannot be downloaded.
    train, test, info = example.load_data(args)
    assert info["name"] == "cluttered"
    assert "CIFAR-10 is not prepared" in info["cifar10_unavailable"]
    assert train[0].shape == (256, 32, 32, 3) and test[2].shape == (8, 32, 32)


def test_cifar10_requested_but_unavailable_fails_clearly(tmp_path, capsys):
    pytest.importorskip("tensorflow_datasets")
    example = _load_example()
    out = tmp_path / "run"
    code = example.main(
        ["--dataset", "cifar10", "--data-dir", str(tmp_path / "tfds"),
         "--output-dir", str(out)]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CIFAR-10 is not prepared in" in err[0]
    assert os.listdir(out) == []


def test_publish_replaces_the_previous_run(tmp_path):
    example = _load_example()
    out, stage = tmp_path / "run", tmp_path / "stage"
    out.mkdir()
    stage.mkdir()
    for name in ["report.md", "report.json", "localization.png", "notes.txt"]:
        (out / name).write_text("old")
    plots = list(example.PLOT_FILES)
    for name in [*example.MODEL_FILES, *plots, *example.REPORT_FILES]:
        (stage / name).write_text("new")
    example.publish(str(stage), str(out), plots)
    assert not (out / "localization.png").exists()  # not made by this run
    assert (out / "notes.txt").read_text() == "old"  # not ours: left alone
    for name in [*example.MODEL_FILES, *plots, *example.REPORT_FILES]:
        assert (out / name).read_text() == "new"
    assert os.listdir(stage) == []
