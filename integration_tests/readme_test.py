"""The README's Python block runs as written and learns.

The block under `## Usage` runs in a fresh process (current KERAS_BACKEND,
a temporary working directory), exactly as a user pastes it; the test then
reads the line it prints and checks the accuracy on the fresh test images
is well above chance (10 classes) and that the mask kept something.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def usage_block():
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Usage\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the README's Usage section has one python block"
    return blocks[0]


def test_usage_block_is_found():
    code = usage_block()
    assert "import keras_ersm" in code and "model.fit(" in code


@pytest.mark.slow
def test_readme_usage_learns(tmp_path):
    env = {
        **os.environ,
        "KERAS_BACKEND": keras.backend.backend(),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    proc = subprocess.run(
        [sys.executable, "-c", usage_block()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if "test accuracy" in line]
    assert len(lines) == 1, proc.stdout[-3000:]
    match = re.search(
        r"test accuracy (\d+)% \(chance 10%\); the mask keeps (\d+)%", lines[0]
    )
    assert match, lines[0]
    accuracy, mean_keep = int(match[1]), int(match[2])
    assert accuracy >= 30, f"the README example does not learn: {lines[0]}"
    assert mean_keep < 100, lines[0]  # the mask drops something
