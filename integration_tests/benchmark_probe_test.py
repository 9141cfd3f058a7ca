"""`benchmarks/trainability_probe.py`: one run of the trainability matrix,
probed after every epoch (the per-epoch numbers the docs quote)."""

import numpy as np
import pytest

from benchmarks import trainability, trainability_probe


class _Loaded(Exception):
    pass


@pytest.mark.parametrize(
    "backbone, dataset, train_size, expected",
    [
        ("mobilenet_v3_small", "hard", None, 10000),
        ("mobilenet_v3_small", "cluttered", None, 3000),
        ("plain_cnn", "hard", None, 3000),
        ("mobilenet_v3_small", "hard", 500, 500),
    ],
)
def test_the_probe_trains_on_the_benchmarks_images(
    monkeypatch, backbone, dataset, train_size, expected
):
    seen = {}

    def load_data(dataset, train_size, upsample=1):
        seen.update(dataset=dataset, train_size=train_size, upsample=upsample)
        raise _Loaded

    monkeypatch.setattr(trainability, "load_data", load_data)
    # Every factor is 1 today: give this backbone 2, so that the probe is
    # seen passing the benchmark's factor.
    builder, mask_at, _ = trainability.BACKBONES[backbone]
    monkeypatch.setitem(trainability.BACKBONES, backbone, (builder, mask_at, 2))
    with pytest.raises(_Loaded):
        trainability_probe.probe(
            backbone, "adam", dataset, "default", 0, train_size=train_size
        )
    assert seen == {
        "dataset": dataset,
        "train_size": expected,
        "upsample": 2,
    }


def test_the_probe_records_every_epoch_and_the_start(capsys):
    records, accuracy = trainability_probe.probe(
        "plain_cnn", "adam", "cluttered", "default", 0, epochs=2, train_size=128
    )
    assert [r["epoch"] for r in records] == [-1, 0, 1]
    assert "loss" not in records[0] and "loss" in records[-1]
    for r in records:
        assert 0.0 <= r["zeros"] <= 1.0
        assert 0.0 < r["keep"] < 1.0
        # At the start the small kernel scores every token alike: flat.
        assert 0.0 < r["eff_tokens"] <= 1.0 + 1e-9
    assert records[0]["eff_tokens"] > 0.99
    assert np.isfinite(records[-1]["score_mean"])
    assert 0.0 <= accuracy <= 100.0
    # One JSON line a record, as the docs' commands capture them.
    assert capsys.readouterr().out.count('"epoch"') == 3


@pytest.mark.parametrize("variant", ["default", "baseline"])
def test_a_benchmark_run_records_its_trajectory_per_epoch(variant):
    settings = {"epochs": 2, "train_size": 128}
    record = trainability.run_one(
        "plain_cnn", "adam", "cluttered", 0, variant, settings, {}
    )
    trace = record["per_epoch"]
    assert len(trace["loss"]) == len(trace["accuracy"]) == 2
    # The last epoch's entries are the record's own end-of-training numbers.
    accuracy = record["train_accuracy"] / 100
    assert trace["accuracy"][-1] == pytest.approx(accuracy, abs=1e-4)
    assert trace["loss"][-1] == pytest.approx(record["final_loss"], abs=1e-4)
    if variant == "baseline":
        assert "keep" not in trace and "flat" not in trace
    else:
        assert len(trace["keep"]) == len(trace["flat"]) == 2
        assert all(0.0 < k < 1.0 for k in trace["keep"])
        assert all(0.0 < f <= 1.0 + 1e-9 for f in trace["flat"])
