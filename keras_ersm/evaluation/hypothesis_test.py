"""Property-based tests of the evaluation functions and `insert_energy_masks`.

Random image sizes, channel counts, batch sizes (0 included), label
encodings (sparse, one-hot, `(N, 1)`), numbers of labels, input dtypes and
mask placements. Each call either works or raises a clear `ValueError` /
`TypeError` that shows what it received; nothing else (no numpy broadcast
error, no KeyError, no backend error) may escape. Models are called on
non-empty batches only: TensorFlow's CPU `Conv2D` returns a wrong shape for
an empty batch, before any keras_ersm code runs.
"""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_ersm

# Every example builds and runs a small model: keep the count small.
SETTINGS = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _clear_error(error):
    return isinstance(error, (ValueError, TypeError)) and "Received:" in str(error)


def _model(size, channels, patch_size, num_classes):
    inputs = keras.Input((size, size, channels))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras_ersm.EnergyMask(patch_size=patch_size, padding="same", name="mask")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def _labels(rng, num, num_classes, encoding):
    sparse = rng.integers(0, max(num_classes, 2), num)
    if encoding == "one_hot" and num_classes > 1:
        return np.eye(num_classes, dtype="float32")[sparse]
    if encoding == "column":
        return sparse[:, None].astype("float32")
    return sparse


case = st.fixed_dictionaries(
    {
        "size": st.sampled_from([4, 6, 8]),
        "channels": st.sampled_from([1, 3]),
        "patch_size": st.sampled_from([1, 2, 3]),
        "num_classes": st.sampled_from([1, 2, 3]),
        "num": st.sampled_from([0, 1, 3, 5]),
        "extra_labels": st.sampled_from([0, 0, -1, 1]),
        "encoding": st.sampled_from(["sparse", "one_hot", "column"]),
        "dtype": st.sampled_from(["float32", "float64", "uint8"]),
        "batch_size": st.sampled_from([1, 2, 32]),
        "seed": st.integers(0, 2**16),
    }
)


@SETTINGS
@given(case=case)
def test_evaluation_functions_work_or_fail_clearly(case):
    rng = np.random.default_rng(case["seed"])
    model = _model(
        case["size"], case["channels"], case["patch_size"], case["num_classes"]
    )
    shape = (case["num"], case["size"], case["size"], case["channels"])
    x = (rng.random(shape) * 255).astype(case["dtype"])
    num_labels = max(case["num"] + case["extra_labels"], 0)
    y = _labels(rng, num_labels, case["num_classes"], case["encoding"])
    evaluation = keras_ersm.evaluation
    calls = {
        "occlusion": lambda: evaluation.occlusion_robustness(
            model,
            (x, y),
            patch_sizes=(2,),
            fractions=(0.25,),
            hide_sizes=(2,),
            batch_size=case["batch_size"],
        ),
        "deletion": lambda: evaluation.deletion_curve(
            model, (x, y), steps=3, batch_size=case["batch_size"]
        ),
        "statistics": lambda: evaluation.mask_statistics(
            model, x, batch_size=case["batch_size"]
        ),
        "grad_cam": lambda: evaluation.grad_cam(
            model, x, layer="conv", batch_size=case["batch_size"]
        ),
        "keep_maps": lambda: keras_ersm.models.keep_maps(
            model, x, layer="mask", batch_size=case["batch_size"]
        ),
    }
    for name, call in calls.items():
        try:
            result = call()
        except Exception as error:  # noqa: BLE001 - the property under test
            assert _clear_error(error), f"{name}: {type(error).__name__}: {error}"
            continue
        # A call that works had images and one label per image.
        assert case["num"] > 0, name
        if name in ("occlusion", "deletion"):
            assert case["extra_labels"] == 0, name
        if name == "keep_maps":
            grid = -(-case["size"] // case["patch_size"])
            assert result.shape == (case["num"], grid, grid)
            assert np.all((result >= 0) & (result <= 1))


insert_case = st.fixed_dictionaries(
    {
        "size": st.sampled_from([4, 5, 8]),
        "at": st.sampled_from(
            ["conv1", "relu1", "conv2", "output", "image", "nope", 3, ["conv1"]]
        ),
        "patch_size": st.sampled_from([1, 2]),
        "padding": st.sampled_from(["valid", "same"]),
        "batch": st.sampled_from([1, 2]),
    }
)


@SETTINGS
@given(case=insert_case)
def test_insert_energy_masks_works_or_fails_clearly(case):
    inputs = keras.Input((case["size"], case["size"], 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv2")(x)
    model = keras.Model(inputs, x)
    try:
        masked = keras_ersm.models.insert_energy_masks(
            model,
            case["at"],
            patch_size=case["patch_size"],
            padding=case["padding"],
        )
    except Exception as error:  # noqa: BLE001 - the property under test
        assert _clear_error(error), f"{type(error).__name__}: {error}"
        assert case["at"] in ("image", "nope", 3) or (
            case["padding"] == "valid" and case["size"] % case["patch_size"]
        )
        if case["at"] == "image":
            assert "cannot be inserted at an input" in str(error)
        return
    assert keras_ersm.models.energy_mask_layers(masked)
    images = np.random.default_rng(0).random(
        (case["batch"], case["size"], case["size"], 3)
    )
    out = keras.ops.convert_to_numpy(masked(images.astype("float32")))
    assert out.shape == (case["batch"], case["size"], case["size"], 4)
    assert np.isfinite(out).all()


def test_hypothesis_settings_stay_small():
    # Guard against a slow suite: the properties above build models.
    assert SETTINGS.max_examples <= 10
    pytest.importorskip("hypothesis")
