"""The benchmarks' bookkeeping, without training: how runs are keyed and
grouped into cells (`benchmarks/trainability.py`) and how the main job is
run over seeds (`benchmarks/main_job_seeds.py`)."""

import json

from benchmarks import main_job_seeds, trainability


def _record(variant, seed, accuracy, epochs=12, dataset="hard"):
    record = {
        "backbone": "plain_cnn",
        "optimizer": "adam",
        "dataset": dataset,
        "seed": seed,
        "variant": variant,
        "test_accuracy": accuracy,
        "chance": 100.0 / 15,
        "mean_keep": None if variant == "baseline" else 0.1,
        "zero_fraction_start": 0.5,
        "zero_fraction_end": 0.7,
    }
    if epochs is not None:
        record["epochs"] = epochs
    return record


def test_the_harder_data_trains_30_epochs_unless_told_otherwise():
    settings = dict(trainability.FULL)
    assert trainability.epochs_for("hard", settings) == 30
    assert trainability.epochs_for("cluttered", settings) == 12
    assert trainability.epochs_for("hard", {**settings, "epochs": 5}) == 5


def test_cells_with_different_epochs_are_summarised_apart():
    # At 12 epochs the mask is at chance on seed 0 where the baseline is
    # not; at 30 epochs it learns. One cell per epoch count, each with its
    # own verdict (mixed, the 12-epoch failure would hide in a mean).
    records = [
        _record("baseline", 0, 20.0, epochs=12),
        _record("default", 0, 6.0, epochs=12),
        _record("baseline", 0, 40.0, epochs=30),
        _record("default", 0, 45.0, epochs=30),
    ]
    rows = trainability.summarize(records)
    verdicts = {(r["epochs"], r["variant"]): r["verdict"] for r in rows}
    assert verdicts == {
        (12, "baseline"): "baseline",
        (12, "default"): "FAIL",
        (30, "baseline"): "baseline",
        (30, "default"): "pass",
    }
    markdown = trainability.to_markdown(rows, "t")
    assert "| plain_cnn | adam | hard | 30 | default | 45.0 |" in markdown


def test_records_without_epochs_are_12_epoch_runs():
    old = _record("default", 0, 6.0, epochs=None)
    rows = trainability.summarize([_record("baseline", 0, 20.0), old])
    assert {r["epochs"] for r in rows} == {12}
    assert trainability._key(old) == trainability._key(_record("default", 0, 1.0))


def test_a_rerun_skips_a_run_only_at_the_same_epochs():
    assert trainability._key(_record("default", 0, 1.0, epochs=12)) != (
        trainability._key(_record("default", 0, 1.0, epochs=30))
    )


_STUB = """
import argparse, json, os, sys
parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int)
parser.add_argument("--output-dir")
args = parser.parse_args()
os.makedirs(args.output_dir, exist_ok=True)
scores = {"mass_inside": 0.3, "pointing_game": 0.8}
loc = {"localization": {"scores": {"keep": scores, "grad_cam": scores}}}
results = {
    "ersm": {"clean_accuracy": 90.0 + args.seed,
             "mask_statistics": {"mean_keep": 0.1}, **loc},
    "baseline": {"clean_accuracy": 89.0, **loc},
}
with open(os.path.join(args.output_dir, "report.json"), "w") as f:
    json.dump({"results": results}, f)
sys.exit(0)
"""


def test_main_job_seeds_runs_every_seed_past_the_scripts_clean_exit(
    tmp_path, monkeypatch
):
    # `examples/train_cifar.py` ends with `sys.exit(main())`; until session
    # 11 its `SystemExit(0)` ended the benchmark after the first run.
    script = tmp_path / "stub.py"
    script.write_text(_STUB)
    monkeypatch.setattr(main_job_seeds, "SCRIPT", str(script))
    output = tmp_path / "seeds.json"
    main_job_seeds.main(
        [
            "--seeds",
            "0",
            "1",
            "--energies",
            "default",
            "--work-dir",
            str(tmp_path / "runs"),
            "--output",
            str(output),
        ]
    )
    runs = json.loads(output.read_text())["runs"]
    assert [(r["seed"], r["ersm_accuracy"]) for r in runs] == [(0, 90.0), (1, 91.0)]
