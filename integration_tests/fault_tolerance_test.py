"""Interrupted training resumes exactly; saved `.keras` files load safely.

Runs on every backend, in process, with the tiny CNN of `_tiny.py`.
"""

import os
import zipfile

import keras
import numpy as np
import pytest
from _tiny import build_model, data

from keras_ersm.saving import load_model

EPOCHS, BATCH_SIZE = 2, 8  # 32 samples: 4 batches per epoch.
# Torch CPU kernels are deterministic here too; the tolerance only covers
# a different summation order should a backend pick one.
ATOL = 0.0 if keras.backend.backend() in ("jax", "tensorflow") else 1e-6


class Interrupt(keras.callbacks.Callback):
    """Raises `KeyboardInterrupt`-like failure at a given epoch and batch."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise RuntimeError(f"simulated failure at {self.at}")


class FirstWeights(keras.callbacks.Callback):
    """Keeps the weights seen at the start of `fit` (after any restore)."""

    def on_train_begin(self, logs=None):
        self.weights = [np.array(w) for w in self.model.get_weights()]


class WeightsAt(keras.callbacks.Callback):
    """Keeps the weights after a given (epoch, batch)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch, self.weights = (epoch, batch), 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            self.weights = [np.array(w) for w in self.model.get_weights()]


def _fit(model, callbacks):
    images, labels = data()
    model.fit(
        images,
        labels,
        batch_size=BATCH_SIZE,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )
    return model


def _assert_same_weights(a, b, atol=ATOL):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=atol)


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def _optimizer_state(model):
    return [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run, with its weights after (epoch 1, batch 1)."""
    directory = tmp_path_factory.mktemp("checkpoints")
    at = WeightsAt(epoch=1, batch=1)
    checkpoint = keras.callbacks.ModelCheckpoint(str(directory / "epoch{epoch}.keras"))
    model = _fit(build_model(), [at, checkpoint])
    return {"model": model, "at": at.weights, "directory": directory}


@pytest.mark.slow
def test_resume_after_mid_epoch_failure_gives_the_uninterrupted_weights(
    tmp_path, reference
):
    reference = reference["model"]
    backup = str(tmp_path / "backup")

    with pytest.raises(RuntimeError, match="simulated failure"):
        _fit(
            build_model(),
            [keras.callbacks.BackupAndRestore(backup), Interrupt(epoch=1, batch=2)],
        )
    assert os.path.isdir(backup)

    # A new process would rebuild the model the same way, then resume.
    resumed = _fit(build_model(), [keras.callbacks.BackupAndRestore(backup)])
    _assert_same_weights(_weights(resumed), _weights(reference))
    _assert_same_weights(_optimizer_state(resumed), _optimizer_state(reference))
    assert not os.path.exists(backup)  # Deleted after a completed fit.


@pytest.mark.slow
def test_batch_level_backup_restores_the_weights_of_that_batch(tmp_path, reference):
    # save_freq=N restores the weights and optimizer state of the last
    # backup, but Keras (3.15) restarts the interrupted epoch from its first
    # batch, so the batches before the failure are seen twice and the final
    # weights differ from an uninterrupted run; use save_freq="epoch" for an
    # exact resume (test above).
    at_weights = reference["at"]
    backup = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="simulated failure"):
        _fit(
            build_model(),
            [
                keras.callbacks.BackupAndRestore(backup, save_freq=2),
                Interrupt(epoch=1, batch=2),
            ],
        )
    first = FirstWeights()
    model = build_model()
    # A fresh model starts elsewhere, so the check below is not vacuous.
    assert not np.allclose(_weights(model)[0], at_weights[0])
    _fit(model, [keras.callbacks.BackupAndRestore(backup, save_freq=2), first])
    # Batches 0-1 of epoch 1 end at global batch 6, a multiple of 2.
    _assert_same_weights(first.weights, at_weights)


def test_checkpoints_written_during_fit_load_in_safe_mode(reference):
    model = reference["model"]
    paths = sorted(reference["directory"].glob("epoch*.keras"))
    assert [p.name for p in paths] == [f"epoch{i}.keras" for i in (1, 2)]
    images, _ = data()
    for path in paths:
        restored = keras.saving.load_model(path, safe_mode=True)
        assert restored.get_layer("mask").__class__.__name__ == "EnergyMask"
        assert load_model(path, safe_mode=True).count_params() == (model.count_params())
    last = keras.saving.load_model(paths[-1], safe_mode=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(last.predict(images, verbose=0)),
        keras.ops.convert_to_numpy(model.predict(images, verbose=0)),
        rtol=1e-6,
        atol=1e-6,
    )
    # The optimizer state is in the file too: training can go on from it.
    _assert_same_weights(_optimizer_state(last), _optimizer_state(model))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "model.keras"
    model = build_model()
    model.optimizer.build(model.trainable_variables)
    model.save(path)
    return path


def test_load_model_round_trip(saved):
    model = load_model(saved, safe_mode=True)
    assert model.get_layer("mask").__class__.__name__ == "EnergyMask"
    assert not load_model(str(saved), compile=False).compiled


@pytest.mark.parametrize("keep_fraction", [0.0, 0.5, 0.99])
def test_truncated_file_gives_a_clear_error(saved, tmp_path, keep_fraction):
    content = saved.read_bytes()
    path = tmp_path / "truncated.keras"
    path.write_bytes(content[: int(len(content) * keep_fraction)])
    with pytest.raises(ValueError, match="truncated or not a .keras archive"):
        load_model(path)


def test_not_a_keras_archive(tmp_path):
    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    with pytest.raises(ValueError, match="Received: path="):
        load_model(text)
    other_zip = tmp_path / "other.keras"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="no 'config.json'"):
        load_model(other_zip)


def test_corrupted_member_gives_a_clear_error(saved, tmp_path):
    content = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as archive:
        info = archive.getinfo("model.weights.h5")
    # Flip bytes inside the stored weights; the CRC no longer matches.
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 64
    content[start : start + 16] = bytes(255 - b for b in content[start : start + 16])
    path = tmp_path / "corrupt.keras"
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="corrupt"):
        load_model(path)


def test_missing_file_and_wrong_type(tmp_path):
    with pytest.raises(ValueError, match="no file at this path"):
        load_model(tmp_path / "absent.keras")
    with pytest.raises(TypeError, match="Received: path=3"):
        load_model(3)


def test_keras_own_error_for_a_truncated_file_is_misleading(saved, tmp_path):
    # Why `keras_ersm.saving.load_model` exists: Keras says "File not found"
    # for a file that exists. If this starts failing, Keras improved its
    # message and the wrapper can be reconsidered.
    path = tmp_path / "truncated.keras"
    path.write_bytes(saved.read_bytes()[:100])
    with pytest.raises(ValueError, match="File not found"):
        keras.saving.load_model(path)
