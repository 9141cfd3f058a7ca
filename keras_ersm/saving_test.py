"""`keras_ersm.saving` (issue 15 items 6 and 10), run once per backend."""

import os
import subprocess
import sys
import warnings
import zipfile

import keras
import numpy as np
import pytest

import keras_ersm


@keras.saving.register_keras_serializable(package="keras_ersm_test")
class _Excite(keras.layers.Layer):
    """A composite layer that creates its sublayers in `__init__`, like the
    squeeze-and-excite blocks of KerasCV's MobileNetV3."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.reduce = keras.layers.Conv2D(filters, 1, name="reduce")
        self.expand = keras.layers.Conv2D(filters, 1, name="expand")

    def build(self, input_shape):
        self.reduce.build(input_shape)
        self.expand.build(tuple(input_shape[:-1]) + (self.filters,))

    def call(self, x):
        return x * keras.ops.sigmoid(self.expand(self.reduce(x)))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def _data():
    rng = np.random.default_rng(0)
    return rng.random((4, 8, 8, 3)).astype("float32"), np.array([0, 1, 0, 1])


def _frozen_classifier():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = _Excite(4, name="excite")(x)
    backbone = keras.Model(inputs, x, name="backbone")
    model = keras_ersm.models.build_classifier(backbone, 2, freeze_backbone=True)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*_data(), verbose=0)
    return model


def test_frozen_backbone_stays_frozen_after_reload(tmp_path):
    model = _frozen_classifier()
    trainable = sorted(v.path for v in model.trainable_weights)
    path = os.path.join(tmp_path, "frozen.keras")
    model.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no skipped optimizer state
        loaded = keras_ersm.saving.load_model(path)
    assert sorted(v.path for v in loaded.trainable_weights) == trainable
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded.optimizer.iterations), 1
    )
    before = [keras.ops.convert_to_numpy(w) for w in loaded.non_trainable_weights]
    loaded.fit(*_data(), verbose=0)
    after = [keras.ops.convert_to_numpy(w) for w in loaded.non_trainable_weights]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    # Uncompiled loading keeps the flags too.
    loaded = keras_ersm.saving.load_model(path, compile=False)
    assert sorted(v.path for v in loaded.trainable_weights) == trainable
    assert getattr(loaded, "optimizer", None) is None
    # A plain keras.saving.load_model needs restore_trainable, as documented.
    plain = keras.saving.load_model(path, compile=False)
    restored = keras_ersm.saving.restore_trainable(plain)
    assert sorted(v.path for v in restored.trainable_weights) == trainable


def _rewrite(path, member, data=None):
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    if data is None:
        del members[member]
    else:
        members[member] = data
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def _saved(tmp_path):
    model = keras.Sequential([keras.Input((4, 4, 2)), keras_ersm.EnergyMask()])
    path = os.path.join(tmp_path, "mask.keras")
    model.save(path)
    return path


def test_invalid_config_json_names_the_file(tmp_path):
    path = _saved(tmp_path)
    _rewrite(path, "config.json", b"{not json")
    with pytest.raises(ValueError, match="invalid 'config.json'.*mask.keras"):
        keras_ersm.saving.load_model(path)


def test_missing_weights_names_the_file(tmp_path):
    path = _saved(tmp_path)
    _rewrite(path, "model.weights.h5")
    with pytest.raises(ValueError, match="model.weights.h5.*mask.keras"):
        keras_ersm.saving.load_model(path)


def test_saving_is_reachable_after_import_keras_ersm():
    code = (
        "import keras_ersm; "
        "assert callable(keras_ersm.saving.load_model); "
        "assert callable(keras_ersm.saving.restore_trainable)"
    )
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
