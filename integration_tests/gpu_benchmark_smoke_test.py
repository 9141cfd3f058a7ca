"""`python -m benchmarks.gpu --smoke` runs end to end on CPU (issue 17).

The GPU benchmark is only run by hand on a GPU; its smoke mode runs the same
code at tiny sizes so that it cannot rot unnoticed. It runs in a subprocess
on the current backend (about 30-60 s on a shared 2-core machine).
"""

import json
import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpu_benchmark_smoke_mode_writes_every_section(tmp_path):
    output = tmp_path / "gpu_smoke.json"
    backend = keras.backend.backend()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gpu",
            "--smoke",
            "--backends",
            backend,
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(output.read_text())
    result = report["backends"][backend]
    assert set(result["layer"]) == {"float32", "mixed_bfloat16"}
    for rows in result["layer"].values():
        assert [tuple(r["shape"]) for r in rows] == [(2, 4, 4, 16), (2, 8, 8, 8)]
        for r in rows:
            assert r["forward_speedup"] > 0 and r["forward_backward_passes"] > 0
    assert result["overhead"]["dtype_policy"] == "mixed_bfloat16"
    assert result["deletion"]["ratio"] > 0
    assert (tmp_path / "gpu_smoke.md").read_text().startswith("# GPU benchmark (smoke")
