"""Tests of `evaluate` and `EvaluationResult` on the current backend."""

import json
import os

import keras
import numpy as np
import pytest

import keras_ersm
from keras_ersm.evaluation import EvaluationResult, _test_utils, evaluate


@pytest.fixture(scope="module")
def data():
    x, y, objects = _test_utils.synthetic_data(num=24)
    return x, y, objects


def _functional(with_mask):
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(
        inputs
    )
    if with_mask:
        h = keras_ersm.EnergyMask(patch_size=2, name="mask")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="dense")(h))


def test_functional_with_energy_mask(data, tmp_path):
    x, y, objects = data
    result = evaluate(
        _functional(True), (x, y), object_masks=objects, steps=5, name="ERSM"
    )
    assert isinstance(result, EvaluationResult)
    assert result.layer == "mask"
    assert set(result.deletion.auc) == {
        "energy",
        "kept",
        "magnitude",
        "random",
        "grad_cam",
    }
    assert set(result.localization.scores) == {"keep", "kept", "grad_cam"}
    assert 0.0 <= result.mask_statistics["mean_keep"] <= 1.0
    assert result.examples["keep"].shape == (8, 8, 8)
    assert result.examples["kept"].shape == (8, 8, 8)
    # Each image's kept map divided by its own peak.
    np.testing.assert_allclose(result.examples["kept"].max(axis=(1, 2)), 1.0, rtol=1e-6)
    assert result.examples["grad_cam"].shape == (8, 16, 16)
    data_dict = json.loads(json.dumps(result.to_dict()))
    assert data_dict["clean_accuracy"] == result.clean_accuracy
    assert data_dict["deletion"]["fractions"][-1] == 1.0
    assert data_dict["localization"]["scores"]["keep"]["iou"] >= 0.0

    markdown = result.to_markdown()
    assert f"| clean accuracy (%) | {result.clean_accuracy:.1f} |" in markdown
    assert f"{result.deletion.auc['energy']:.1f}" in markdown
    keep = result.localization.scores["keep"]["mass_inside"]
    assert f"{keep:.3f}" in markdown
    assert "| metric | keep map | kept map | Grad-CAM | uniform map |" in markdown
    kept = result.localization.scores["kept"]["pointing_game"]
    assert f"{kept:.3f}" in markdown
    assert f"{result.deletion.auc['kept']:.1f}" in markdown
    assert "*Hide-and-Seek*" in markdown

    written = result.save_plots(tmp_path / "plots")
    assert written == [
        "deletion_curves.png",
        "occlusion.png",
        "keep_overlay.png",
        "mask_histogram.png",
        "localization.png",
        "keep_vs_grad_cam.png",
    ]
    for name in written:
        with open(tmp_path / "plots" / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_baseline_cut_at_a_named_layer_and_side_by_side(data, tmp_path):
    x, y, objects = data
    ersm = evaluate(_functional(True), (x, y), object_masks=objects, steps=3,
                    name="ERSM", num_examples=4)  # fmt: skip
    baseline = _functional(False)
    weights = [w.copy() for w in baseline.get_weights()]
    result = evaluate(baseline, (x, y), object_masks=objects, layer="conv",
                      steps=3, name="baseline", num_examples=4)  # fmt: skip
    assert result.layer == "conv"
    assert set(result.deletion.auc) == {"magnitude", "random", "grad_cam"}
    assert result.mask_statistics is None and "keep" not in result.examples
    assert set(result.localization.scores) == {"grad_cam"}
    # The model is not changed by the evaluation.
    for before, after in zip(weights, baseline.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    # With all orders' tokens kept, accuracy is the clean accuracy.
    for curve in result.deletion.accuracy.values():
        assert curve[0] == pytest.approx(result.clean_accuracy)
    json.dumps(result.to_dict())

    markdown = ersm.to_markdown(baseline=result, figures=["occlusion.png"])
    assert "| metric | ERSM | baseline |" in markdown
    assert (
        "| metric | ERSM keep map | ERSM kept map | Grad-CAM (ERSM model) | "
        "Grad-CAM (baseline model) | uniform map |"
    ) in markdown
    assert f"{result.deletion.auc['magnitude']:.1f}" in markdown
    assert "- `occlusion.png`: " in markdown
    written = ersm.save_plots(str(tmp_path), baseline=result)
    assert "keep_vs_grad_cam.png" in written
    assert all(os.path.getsize(tmp_path / name) > 1000 for name in written)
    # A baseline alone: no keep map, Grad-CAM only.
    assert "keep_overlay.png" not in result.save_plots(tmp_path / "baseline")


def test_sequential_model_default_cut_and_dataset_input(data):
    x, y, _ = data
    model = _test_utils.tiny_model()

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return x[8 * index : 8 * index + 8], y[8 * index : 8 * index + 8]

    result = evaluate(model, Batches(), steps=3, num_examples=2,
                      occlusion={"patch_sizes": (8,), "hide_sizes": ()})  # fmt: skip
    assert result.layer == "mask" and result.localization is None
    assert result.occlusion.num_images == 24
    assert result.examples["images"].shape == (2, 16, 16, 3)
    assert "Keep map vs Grad-CAM" not in result.to_markdown()
    assert sorted(result.occlusion.accuracy) == [
        "cutout_8px_10pct",
        "cutout_8px_25pct",
        "cutout_8px_50pct",
    ]
    skipped = evaluate(model, (x, y), orders=(), num_examples=0)
    assert skipped.deletion is None and skipped.examples == {}
    assert "deletion" not in skipped.to_dict()


def test_model_without_mask_defaults_to_its_last_4d_layer(data):
    x, y, _ = data
    result = evaluate(_functional(False), (x, y), steps=3, num_examples=0)
    assert result.layer == "conv"
    assert "energy" not in result.deletion.auc


@pytest.mark.parametrize(
    "kwargs, error, received",
    [
        ({"model": "model"}, TypeError, "model='model'"),
        ({"layer": "pool"}, ValueError, "layer='pool'"),
        ({"layer": "nope"}, ValueError, "layer='nope'"),
        ({"orders": ("energy",)}, ValueError, "orders=('energy',)"),
        ({"orders": ("sideways",)}, ValueError, "orders=('sideways',)"),
        ({"orders": 3}, TypeError, "orders=3"),
        ({"occlusion": {"size": 4}}, ValueError, "occlusion={'size': 4}"),
        ({"occlusion": [4]}, TypeError, "occlusion=[4]"),
        ({"num_examples": -1}, ValueError, "num_examples=-1"),
        ({"num_examples": 1.5}, TypeError, "num_examples=1.5"),
        ({"name": 3}, TypeError, "name=3"),
        ({"seed": "0"}, TypeError, "seed='0'"),
        ({"verbose": 5}, ValueError, "verbose=5"),
    ],
)
def test_bad_arguments_name_the_received_value(data, kwargs, error, received):
    x, y, _ = data
    arguments = {"model": _functional(False), "data": (x, y), **kwargs}
    with pytest.raises(
        error,
        match=received.replace("(", r"\(").replace(")", r"\)").replace("[", r"\["),
    ):
        evaluate(**arguments)


def test_result_arguments_are_checked(data, tmp_path):
    x, y, _ = data
    result = evaluate(_functional(False), (x, y), orders=(), num_examples=0)
    with pytest.raises(TypeError, match="baseline='ERSM'"):
        result.to_markdown(baseline="ERSM")
    with pytest.raises(TypeError, match="directory=3"):
        result.save_plots(3)
    with pytest.raises(ValueError, match="dpi=0"):
        result.save_plots(tmp_path, dpi=0)
