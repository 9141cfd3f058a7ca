"""TensorFlow: MirroredStrategy on 2 logical CPU devices trains like 1.

The worker runs in its own process because logical devices must be
configured before TensorFlow initialises.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

pytestmark = [
    pytest.mark.skipif(
        keras.backend.backend() != "tensorflow",
        reason="tf.distribute strategies need the TensorFlow backend",
    ),
    pytest.mark.slow,
]

HERE = os.path.dirname(os.path.abspath(__file__))
# float32; replicas reduce gradients in a different order.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "_tf_distributed_worker.py")],
        env=env,
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL)


def test_two_replicas(results):
    assert results["replicas"] == 2


def test_losses_match_one_device(results):
    single, mirrored = results["single"], results["mirrored"]
    assert len(single["losses"]) == 8
    assert single["losses"][0] != single["losses"][-1]
    _close(mirrored["losses"], single["losses"])


def test_mask_weights_keep_and_energy_loss_match_one_device(results):
    single, mirrored = results["single"], results["mirrored"]
    for key in ("mask_kernel", "mask_bias", "keep", "dense_kernel"):
        _close(mirrored[key], single[key])
    assert single["energy_loss"] > 0.0
    _close(mirrored["energy_loss"], single["energy_loss"])
