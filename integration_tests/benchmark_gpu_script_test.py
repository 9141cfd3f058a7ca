"""`benchmarks/trainability_gpu.sh`'s job sets, run with a stand-in for
Python that prints each command instead of training."""

import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "trainability_gpu.sh"


def _commands(tmp_path, jobset, **env):
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "[ $*"\n')
    fake.chmod(0o755)
    log = tmp_path / f"{jobset}.log"
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHON": str(fake),
            "JOBSET": jobset,
            "LOG": str(log),
            "JOBS": "1",
            "LIMIT": "60",
            **env,
        },
        capture_output=True,
        text=True,
    )
    lines = log.read_text().splitlines() if log.exists() else []
    return result, [line[2:].split() for line in lines]


def _arg(command, name):
    i = command.index(name) + 1
    values = []
    while i < len(command) and not command[i].startswith("--"):
        values.append(command[i])
        i += 1
    return values


def test_the_control_set_runs_every_mobilenet_protocol_seed_adam_first(tmp_path):
    result, commands = _commands(tmp_path, "control", TAG="h200_protocol")
    assert result.returncode == 0, result.stderr
    assert len(commands) == 9
    assert [_arg(c, "--optimizers")[0] for c in commands[:3]] == ["adam"] * 3
    assert {_arg(c, "--optimizers")[0] for c in commands} == {
        "adam",
        "adamw",
        "sgd_0.01",
    }
    for command in commands:
        assert _arg(command, "--variants") == [
            "default",
            "default_matched",
            "baseline_shifted",
        ]
        assert _arg(command, "--tag") == ["h200_protocol"]
        assert _arg(command, "--epochs") == ["30"]


def test_the_plateau_set_gives_each_job_two_seeds(tmp_path):
    result, commands = _commands(tmp_path, "plateau", EPOCHS="12")
    assert result.returncode == 0, result.stderr
    seeds = [_arg(c, "--seeds") for c in commands]
    assert seeds == [[str(s), str(s + 1)] for s in range(0, 12, 2)]
    assert {tuple(_arg(c, "--epochs")) for c in commands} == {("12",)}


def test_the_mobilenet10k_set_runs_the_cpu_files_missing_jobs_first(tmp_path):
    result, commands = _commands(tmp_path, "mobilenet10k")
    assert result.returncode == 0, result.stderr
    first = [(_arg(c, "--optimizers")[0], _arg(c, "--seeds")[0]) for c in commands[:6]]
    assert first == [
        ("sgd_0.01", "0"),
        ("sgd_0.01", "1"),
        ("sgd_0.01", "2"),
        ("adamw", "1"),
        ("adamw", "2"),
        ("adam", "0"),
    ]
    assert len(commands) == 9


def test_an_unknown_job_set_is_refused_by_name(tmp_path):
    result, commands = _commands(tmp_path, "bogus")
    assert result.returncode == 2
    assert "Unknown JOBSET=bogus" in result.stderr
    assert commands == []
