"""JAX: DataParallel and ModelParallel on 4 CPU devices train like 1 device.

The worker runs in its own process because the device count must be set
(XLA_FLAGS=--xla_force_host_platform_device_count=4) before JAX starts.
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
        keras.backend.backend() != "jax",
        reason="keras.distribution is implemented for the JAX backend only",
    ),
    pytest.mark.slow,
]

HERE = os.path.dirname(os.path.abspath(__file__))
# float32 with different reduction orders across devices.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def results():
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "_jax_distributed_worker.py")],
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


def test_worker_sees_four_devices(results):
    assert results["num_devices"] == 4


@pytest.mark.parametrize("engine", ["data_parallel", "model_parallel"])
def test_losses_match_one_device(results, engine):
    single, multi = results["single"], results[engine]
    assert len(single["losses"]) == 8
    # The loss moved, so matching it means something.
    assert single["losses"][0] != single["losses"][-1]
    _close(multi["losses"], single["losses"])


@pytest.mark.parametrize("engine", ["data_parallel", "model_parallel"])
def test_mask_weights_keep_and_energy_loss_match_one_device(results, engine):
    single, multi = results["single"], results[engine]
    for key in ("mask_kernel", "mask_bias", "keep", "dense_kernel"):
        _close(multi[key], single[key])
    assert single["energy_loss"] > 0.0
    _close(multi["energy_loss"], single["energy_loss"])


def test_data_parallel_replicates_and_model_parallel_shards_the_dense_kernel(
    results,
):
    full = [4, 4]
    assert results["data_parallel"]["dense_kernel_shard"] == full
    assert results["data_parallel"]["dense_kernel_devices"] == 4
    # LayoutMap: dense/kernel -> (None, "model") on a 2x2 mesh.
    assert results["model_parallel"]["dense_kernel_shard"] == [4, 2]
