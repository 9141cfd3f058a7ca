"""`keras.utils.set_random_seed` makes a small training run repeatable.

Two runs of the same training (seeded initialisation and shuffling) give
identical EnergyMask keep maps on JAX and TensorFlow; on torch they agree
within TORCH_ATOL (measured identical on CPU; the tolerance leaves room for
non-deterministic CPU kernels).
"""

import keras
import numpy as np
import pytest
from _tiny import build_model, data, mask_state

TORCH_ATOL = 1e-6
ATOL = TORCH_ATOL if keras.backend.backend() == "torch" else 0.0


def _train(seed):
    model = build_model(seed=seed)
    images, labels = data()
    before = mask_state(model, images[:8])
    # shuffle=True: the data order comes from the seed too.
    model.fit(images, labels, batch_size=8, epochs=2, shuffle=True, verbose=0)
    return before, mask_state(model, images[:8])


@pytest.fixture(scope="module")
def runs():
    return _train(seed=0), _train(seed=0)


@pytest.mark.slow
def test_same_seed_gives_the_same_mask(runs):
    (_, first), (_, second) = runs
    for key in ("keep", "kernel", "bias"):
        np.testing.assert_allclose(first[key], second[key], rtol=0, atol=ATOL)
    np.testing.assert_allclose(
        first["energy_loss"], second["energy_loss"], rtol=0, atol=ATOL
    )


@pytest.mark.slow
def test_training_moved_the_mask(runs):
    (before, after), _ = runs
    assert np.max(np.abs(after["keep"] - before["keep"])) > 1e-3


def test_another_seed_gives_another_mask():
    images, _ = data()
    first = mask_state(build_model(seed=0), images[:8])["keep"]
    other = mask_state(build_model(seed=1), images[:8])["keep"]
    assert np.max(np.abs(first - other)) > 1e-3
