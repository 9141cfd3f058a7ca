import csv
import os

import keras
import pytest

import keras_ersm
from keras_ersm.evaluation import _test_utils


def _compiled_model():
    keras.utils.set_random_seed(0)
    model = _test_utils.tiny_model()
    model.compile(
        keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


@pytest.mark.slow
def test_callback_keys_in_history_and_csv(tmp_path):
    x, y, objects = _test_utils.synthetic_data(num=16)
    model = _compiled_model()
    csv_path = str(tmp_path / "log.csv")
    snapshots = str(tmp_path / "snapshots")
    deletion = keras_ersm.callbacks.DeletionCurve(
        (x, y), orders=("energy", "random"), steps=3, every=2
    )
    callbacks = [
        deletion,
        keras_ersm.callbacks.OcclusionRobustness(
            (x, y),
            patch_sizes=(4,),
            fractions=(0.25,),
            hide_sizes=(),
            object_masks=objects,
        ),
        keras_ersm.callbacks.MaskStatistics(x),
        keras_ersm.callbacks.MaskSnapshot(x[:2], snapshots, every=2),
        keras.callbacks.CSVLogger(csv_path),
    ]
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=callbacks)
    logs = history.history
    for key in (
        "deletion/energy_auc",
        "deletion/random_auc",
        "occlusion/clean",
        "occlusion/cutout_4px_25pct",
        "occlusion/object",
        "occlusion/background",
        "mask/mean_keep",
        "mask/active_fraction",
        "mask/entropy",
        "mask/spread",
        "snapshot/mean_keep",
    ):
        assert key in logs, key
    # every=2 on 3 epochs: epochs 0 and 2 (also the last one).
    assert len(logs["deletion/energy_auc"]) == 2
    assert len(logs["mask/mean_keep"]) == 3
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert rows[1]["deletion/energy_auc"] == "NA"
    assert float(rows[0]["deletion/energy_auc"]) == pytest.approx(
        logs["deletion/energy_auc"][0]
    )
    assert sorted(os.listdir(snapshots)) == [
        "mask_epoch_0000.png",
        "mask_epoch_0002.png",
    ]
    # Evaluated on the trained state: equals a fresh evaluation now.
    stats = keras_ersm.evaluation.mask_statistics(model, x)
    assert logs["mask/mean_keep"][-1] == pytest.approx(stats["mean_keep"], rel=1e-5)
    assert deletion.last_result.auc["energy"] == logs["deletion/energy_auc"][-1]


def test_constructors_are_cheap_and_validate():
    x, y, _ = _test_utils.synthetic_data(num=4)
    callback = keras_ersm.callbacks.DeletionCurve((x, y))
    assert callback.last_result is None
    with pytest.raises(ValueError, match="every"):
        keras_ersm.callbacks.MaskStatistics(x, every=0)
    with pytest.raises(ValueError, match="prefix"):
        keras_ersm.callbacks.MaskStatistics(x, prefix="")
    with pytest.raises(ValueError, match="max_images"):
        keras_ersm.callbacks.MaskSnapshot(x, "/tmp/unused", max_images=0)


def test_constructor_needs_a_destination():
    x, _, _ = _test_utils.synthetic_data(num=4)
    with pytest.raises(ValueError, match="tensorboard_dir"):
        keras_ersm.callbacks.MaskSnapshot(x, None)
    # A wrong type is a TypeError, a wrong value a ValueError (_validation).
    with pytest.raises(TypeError, match="Received: tensorboard_dir=3"):
        keras_ersm.callbacks.MaskSnapshot(x, None, tensorboard_dir=3)
    with pytest.raises(TypeError, match="Received: directory=3"):
        keras_ersm.callbacks.MaskSnapshot(x, 3)
    with pytest.raises(TypeError, match="Received: every=1.5"):
        keras_ersm.callbacks.MaskStatistics(x, every=1.5)
    with pytest.raises(TypeError, match="Received: prefix=None"):
        keras_ersm.callbacks.MaskStatistics(x, prefix=None)


def _event_tags(directory):
    import tensorflow as tf

    tags = []
    for name in sorted(os.listdir(directory)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
            tags += [(v.tag, event.step) for v in event.summary.value]
    return tags


def test_tensorboard_records_keys_and_keep_map_images(tmp_path):
    # tensorboard is in the `tensorflow` and `all` extras: runs on every backend.
    pytest.importorskip("tensorflow")
    pytest.importorskip("tensorboard")
    x, y, _ = _test_utils.synthetic_data(num=8)
    model = _compiled_model()
    logs = tmp_path / "tb"
    snapshot = keras_ersm.callbacks.MaskSnapshot(
        x[:2], None, every=2, tensorboard_dir=str(logs)
    )
    model.fit(
        x,
        y,
        epochs=3,
        verbose=0,
        callbacks=[
            keras_ersm.callbacks.MaskStatistics(x, every=2),
            snapshot,
            keras.callbacks.TensorBoard(str(logs)),
        ],
    )
    assert sorted(os.listdir(logs)) == ["keep_maps", "train"]
    assert snapshot.paths == []  # no PNG directory given
    # Keep-map overlays as images, one per evaluated epoch (0 and 2).
    assert _event_tags(logs / "keep_maps") == [
        ("snapshot/keep_maps", 0),
        ("snapshot/keep_maps", 2),
    ]
    # The callbacks' numbers reach TensorBoard's epoch scalars.
    tags = {tag for tag, _ in _event_tags(logs / "train")}
    assert "epoch_mask/mean_keep" in tags and "epoch_snapshot/mean_keep" in tags
