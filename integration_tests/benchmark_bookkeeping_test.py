"""The benchmarks' bookkeeping, without training: how runs are keyed and
grouped into cells (`benchmarks/trainability.py`) and how the main job is
run over seeds (`benchmarks/main_job_seeds.py`)."""

import json

import numpy as np
import pytest

import keras_ersm
from benchmarks import main_job_seeds, trainability, trainability_probe


def _record(variant, seed, accuracy, epochs=12, dataset="hard", **extra):
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
    return {**record, **extra}


def test_the_harder_data_trains_30_epochs_unless_told_otherwise():
    settings = dict(trainability.FULL)
    assert trainability.epochs_for("hard", settings) == 30
    assert trainability.epochs_for("cluttered", settings) == 12
    assert trainability.epochs_for("hard", {**settings, "epochs": 5}) == 5
    # Every backbone's protocol cells train the harder data 30 epochs.
    assert {c[3] for c in trainability.protocol_cells() if c[2] == "hard"} == {30}


def test_the_protocol_sets_mobilenets_images_and_learning_rate():
    settings = dict(trainability.FULL)
    size = trainability.train_size_for
    assert size("mobilenet_v3_small", "hard", settings) == 10000
    assert size("mobilenet_v3_small", "cluttered", settings) == 3000
    assert size("plain_cnn", "hard", settings) == 3000
    # Named on the command line, a train size applies to every backbone.
    assert size("mobilenet_v3_small", "hard", {**settings, "train_size": 500}) == 500
    cells = trainability.planned_cells({**settings, "datasets": ["hard"]})
    optimizers = {(c[0], c[1]) for c in cells}
    assert ("mobilenet_v3_small", "sgd_0.01") in optimizers
    assert ("mobilenet_v3_small", "sgd") not in optimizers
    assert ("plain_cnn", "sgd") in optimizers and ("bn_cnn", "sgd") in optimizers
    # Named optimizers are trained as named.
    named = trainability.planned_cells(
        {**settings, "datasets": ["hard"], "optimizers": ["sgd"]}, protocol=False
    )
    assert ("mobilenet_v3_small", "sgd", "hard", 30, 10000) in named


def _verdicts_of_two_cells(field, first, second):
    # The mask at chance where the baseline is not in the `first` cell,
    # above it in the `second`: one verdict per cell (mixed, the failure
    # would hide in a mean).
    records = [
        _record("baseline", 0, 20.0, **{field: first}),
        _record("default", 0, 6.0, **{field: first}),
        _record("baseline", 0, 40.0, **{field: second}),
        _record("default", 0, 45.0, **{field: second}),
    ]
    rows = trainability.summarize(records)
    verdicts = {(r[field], r["variant"]): r["verdict"] for r in rows}
    return rows, verdicts


def test_cells_with_different_training_images_are_summarised_apart():
    _, verdicts = _verdicts_of_two_cells("train_size", 3000, 10000)
    assert verdicts[(3000, "default")] == "FAIL"
    assert verdicts[(10000, "default")] == "pass"
    # A record without a train size is a 3000-image run (the only size
    # before session 12's 10000-image runs), keyed apart from one of those.
    old = _record("default", 0, 6.0)
    assert trainability._key(old) == trainability._key(
        _record("default", 0, 1.0, train_size=3000)
    )
    assert trainability._key(old) != trainability._key(
        _record("default", 0, 1.0, train_size=10000)
    )


def test_the_protocol_table_names_every_cell_and_what_is_not_run():
    rows = trainability.summarize(
        [
            _record("baseline", 0, 40.0, epochs=30),
            _record("default", 0, 45.0, epochs=30),
            # Off the protocol (12 epochs): not its verdict.
            _record("baseline", 0, 20.0, epochs=12, optimizer="adamw"),
            _record("default", 0, 25.0, epochs=12, optimizer="adamw"),
        ]
    )
    verdicts = {
        (r["backbone"], r["optimizer"], r["dataset"]): r["verdict"]
        for r in trainability.protocol_verdicts(rows)
    }
    assert len(verdicts) == len(trainability.protocol_cells())
    assert verdicts[("plain_cnn", "adam", "hard")].startswith("partial: pass")
    assert verdicts[("plain_cnn", "adamw", "hard")] == "not run"
    assert verdicts[("mobilenet_v3_small", "sgd_0.01", "hard")] == "not run"
    markdown = trainability.to_markdown(rows, "t")
    # Seeds 1 and 2 of the protocol's three are missing: a partial verdict.
    assert (
        "| plain_cnn | adam | hard | 30 | 3000 | 0 | partial: pass, seeds [1, 2] "
        "not run |" in markdown
    )


def test_a_protocol_cell_with_every_seed_has_the_cells_verdict():
    records = [
        _record(v, seed, acc, epochs=30)
        for seed in (0, 1, 2)
        for v, acc in (("baseline", 40.0), ("default", 30.0))
    ]
    rows = trainability.summarize(records)
    verdicts = {
        (r["backbone"], r["optimizer"], r["dataset"]): r["verdict"]
        for r in trainability.protocol_verdicts(rows)
    }
    assert verdicts[("plain_cnn", "adam", "hard")] == "FAIL"


def test_main_skips_the_runs_already_recorded_and_no_other(monkeypatch, tmp_path):
    monkeypatch.setattr(trainability, "RESULTS", str(tmp_path))
    calls = []

    def run_one(backbone, optimizer, dataset, seed, variant, settings, cache):
        calls.append((backbone, optimizer, dataset, seed, variant))
        return _record(
            variant,
            seed,
            50.0,
            epochs=trainability.epochs_for(dataset, settings),
            dataset=dataset,
            backbone=backbone,
            optimizer=optimizer,
            train_size=trainability.train_size_for(backbone, dataset, settings),
        )

    monkeypatch.setattr(trainability, "run_one", run_one)
    trainability.main(["--quick"])
    # Quick: the plain CNN, three optimizers, three seeds, baseline + default.
    assert len(calls) == 18
    assert {c[1] for c in calls} == {"adam", "adamw", "sgd"}
    calls.clear()
    trainability.main(["--quick"])
    assert calls == []
    # A 3000-image record does not stand in for the protocol's 10000.
    jsonl = tmp_path / f"trainability_{trainability.keras.backend.backend()}.jsonl"
    with open(jsonl, "a") as f:
        for v in ("baseline", "default"):
            r = _record(v, 0, 10.0, epochs=30, backbone="mobilenet_v3_small")
            f.write(json.dumps({**r, "train_size": 3000}) + "\n")
    trainability.main(
        ["--backbones", "mobilenet_v3_small", "--datasets", "hard", "--seeds", "0"]
    )
    assert sorted(calls) == sorted(
        ("mobilenet_v3_small", o, "hard", 0, v)
        for o in ("adam", "adamw", "sgd_0.01")
        for v in ("baseline", "default")
    )


def test_flatness_is_one_for_a_uniform_map_and_one_over_tokens_for_one_token():
    keep = np.array([[0.2, 0.2, 0.2, 0.2], [0.0, 0.9, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    np.testing.assert_allclose(trainability.flatness(keep), [1.0, 0.25, 0.5])
    # Four 2x2 maps (images, rows, cols) flatten per image.
    maps = np.ones((4, 2, 2))
    np.testing.assert_allclose(trainability.flatness(maps), [1.0] * 4)


def test_the_table_shows_flatness_where_runs_recorded_it():
    rows = trainability.summarize(
        [
            _record("baseline", 0, 40.0, epochs=30),
            _record("default", 0, 45.0, epochs=30, eff_tokens=0.9),
            _record("default", 1, 45.0, epochs=30, eff_tokens=0.7),
            _record("baseline", 1, 40.0, epochs=30),
            _record("other", 0, 45.0, epochs=30),
        ]
    )
    flat = {r["variant"]: r["eff_tokens"] for r in rows}
    assert flat["default"] == pytest.approx(0.8)
    markdown = trainability.to_markdown(rows, "t")
    assert "| 0.100 | 0.80 | 0.500 |" in markdown
    # Runs that did not record it leave the column empty.
    assert "| 0.100 |  | 0.500 |" in markdown


def test_cells_with_different_epochs_are_summarised_apart():
    rows, verdicts = _verdicts_of_two_cells("epochs", 12, 30)
    assert verdicts == {
        (12, "baseline"): "baseline",
        (12, "default"): "FAIL",
        (30, "baseline"): "baseline",
        (30, "default"): "pass",
    }
    markdown = trainability.to_markdown(rows, "t")
    assert "| plain_cnn | adam | hard | 30 | 3000 | default | 45.0 |" in markdown


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


def test_the_defaults_search_summarises_what_its_default_output_collects(tmp_path):
    from benchmarks import defaults_search

    for name in ("defaults_round1.jsonl", "defaults_search.jsonl", "other.jsonl"):
        (tmp_path / name).write_text("")
    (tmp_path / "defaults.md").write_text("")
    found = [p.rsplit("/", 1)[-1] for p in defaults_search.round_files(tmp_path)]
    assert found == ["defaults_round1.jsonl", "defaults_search.jsonl"]


def _initial_weights(backbone, variant, seed=0):
    model, _ = trainability.build(backbone, variant, num_classes=10, seed=seed)
    return [
        np.asarray(w)
        for layer in model.layers
        if not isinstance(layer, keras_ersm.EnergyMask)
        for w in layer.weights
    ]


def _same(a, b):
    return len(a) == len(b) and all(
        x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b, strict=True)
    )


def test_default_matched_starts_every_weight_but_the_masks_as_the_baseline():
    baseline = _initial_weights("plain_cnn", "baseline")
    # `default` takes one draw of the seeded generator for its kernel, so
    # its head starts as the shifted control's, not as the baseline's.
    assert not _same(_initial_weights("plain_cnn", "default"), baseline)
    assert _same(
        _initial_weights("plain_cnn", "default"),
        _initial_weights("plain_cnn", "baseline_shifted"),
    )
    assert _same(_initial_weights("plain_cnn", "default_matched"), baseline)
    # The matched kernel follows the run's seed.
    kernels = []
    for seed in (0, 1):
        model, _ = trainability.build("plain_cnn", "default_matched", 10, seed)
        kernels.append(
            np.asarray(keras_ersm.models.energy_mask_layers(model)[0].kernel)
        )
    assert not np.array_equal(*kernels)
    # `build` restates the default kernel initializer with a seed: it must
    # stay `EnergyMask()`'s own in everything but the seed.
    configs = []
    for variant in ("default", "default_matched"):
        model, _ = trainability.build("plain_cnn", variant, 10, 0)
        initializer = keras_ersm.models.energy_mask_layers(model)[0].kernel_initializer
        configs.append((type(initializer), {**initializer.get_config(), "seed": None}))
    assert configs[0] == configs[1]


@pytest.mark.parametrize("flag", ["--epochs", "--train-size"])
@pytest.mark.parametrize("value", ["0", "-3", "ten"])
def test_a_count_below_one_is_refused_by_value(
    flag, value, capsys, monkeypatch, tmp_path
):
    # Refused while parsing: nothing trains and nothing is written. (Before,
    # `--train-size 0` fell back to the default size and rewrote the
    # summary with `train_size: 0` in its settings.)
    monkeypatch.setattr(trainability, "RESULTS", str(tmp_path))
    monkeypatch.setattr(trainability, "run_one", _no_training)
    with pytest.raises(SystemExit) as raised:
        trainability.main([flag, value, "--quick"])
    assert raised.value.code == 2
    assert list(tmp_path.iterdir()) == []
    error = capsys.readouterr().err
    assert flag in error and repr(value) in error and "at least 1" in error
    with pytest.raises(SystemExit):
        trainability_probe.main([flag, value])
    assert repr(value) in capsys.readouterr().err


def _no_training(*args, **kwargs):
    raise AssertionError("a refused argument must not train")
