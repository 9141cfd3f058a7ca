import json

import keras
import numpy as np
import pytest

import keras_ersm
from keras_ersm.evaluation import _test_utils, deletion


@pytest.fixture(scope="module")
def trained():
    x, y, objects = _test_utils.synthetic_data()
    return _test_utils.trained_model(), x, y


def _accuracy(logits, y):
    return 100.0 * np.mean(np.argmax(keras.ops.convert_to_numpy(logits), -1) == y)


def _naive_curve(model, x, y, orders, batch_size, seed, replace_keep=False):
    """One model call per deletion step and batch, written independently."""
    conv, mask = model.get_layer("conv"), model.get_layer("mask")
    pool, dense = model.get_layer("pool"), model.get_layer("dense")
    rng = np.random.default_rng(seed)
    n = None
    correct = {}
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        features = conv(xb)
        terms = mask.energy_terms(features)
        scores = keras.ops.convert_to_numpy(terms["scores"])
        keep = keras.ops.convert_to_numpy(terms["keep"])
        b, gh, gw = keep.shape
        n = gh * gw
        tokens = keras.ops.convert_to_numpy(features).reshape(b, gh, 2, gw, 2, -1)
        norms = np.sqrt((tokens**2).sum(axis=(2, 4, 5))).reshape(b, n)
        rank = {}
        for order in orders:
            if order == "energy":
                rank[order] = np.argsort(-scores.reshape(b, n), 1, kind="stable")
            elif order == "kept":
                kept = keep.reshape(b, n) * norms
                rank[order] = np.argsort(kept, 1, kind="stable")
            elif order == "magnitude":
                rank[order] = np.argsort(norms, 1, kind="stable")
            else:
                rank[order] = np.argsort(rng.random((b, n)), 1, kind="stable")
        for order in orders:
            correct.setdefault(order, np.zeros(n + 1))
            for k in range(n + 1):
                binary = np.ones((b, n), "float32")
                np.put_along_axis(binary, rank[order][:, :k], 0.0, axis=1)
                binary = binary.reshape(b, gh, gw)
                if replace_keep:
                    # The reference protocol: the binary map, no rescaling.
                    up = np.repeat(np.repeat(binary, 2, axis=1), 2, axis=2)
                    masked = keras.ops.convert_to_numpy(features) * up[..., None]
                else:
                    masked = mask.apply_keep(features, keep * binary)
                logits = dense(pool(masked))
                correct[order][k] += _accuracy(logits, yb) * len(yb) / 100.0
    return {o: 100.0 * c / len(x) for o, c in correct.items()}


def test_batched_equals_naive(trained):
    model, x, y = trained
    x, y = x[:16], y[:16]
    orders = ("energy", "kept", "magnitude", "random")
    result = keras_ersm.evaluation.deletion_curve(
        model, (x, y), orders=orders, batch_size=8, step_batch_size=24, seed=3
    )
    naive = _naive_curve(model, x, y, orders, batch_size=8, seed=3)
    assert len(result.fractions) == 65
    np.testing.assert_allclose(result.fractions, np.arange(65) / 64)
    for order in orders:
        np.testing.assert_array_equal(result.accuracy[order], naive[order])


def test_replace_keep_equals_naive(trained):
    model, x, y = trained
    x, y = x[:16], y[:16]
    result = keras_ersm.evaluation.deletion_curve(
        model, (x, y), orders=("energy",), replace_keep=True
    )
    naive = _naive_curve(model, x, y, ("energy",), 16, 0, replace_keep=True)
    np.testing.assert_array_equal(result.accuracy["energy"], naive["energy"])


def test_endpoints(trained):
    model, x, y = trained
    result = keras_ersm.evaluation.deletion_curve(model, (x, y), steps=5)
    clean = _accuracy(model.predict(x, verbose=0), y)
    mask = model.get_layer("mask")
    features = model.get_layer("conv")(x)
    zero = keras.ops.zeros((len(x), 8, 8))
    deleted = model.get_layer("dense")(
        model.get_layer("pool")(mask.apply_keep(features, zero))
    )
    all_deleted = _accuracy(deleted, y)
    np.testing.assert_allclose(result.fractions, [0, 0.25, 0.5, 0.75, 1.0])
    assert set(result.accuracy) == set(deletion.ORDERS)
    for order in ("energy", "kept", "magnitude", "random", "grad_cam"):
        assert result.accuracy[order][0] == clean
        assert result.accuracy[order][-1] == all_deleted
        assert 0.0 <= result.auc[order] <= 100.0
    expected = np.trapezoid if hasattr(np, "trapezoid") else np.trapz
    assert result.auc["energy"] == pytest.approx(
        expected(result.accuracy["energy"], result.fractions)
    )
    payload = json.loads(json.dumps(result.to_dict()))
    assert set(payload["auc"]) == set(result.auc)
    figure = result.plot()
    assert len(figure.axes[0].lines) == 5


def test_kept_order_differs_from_energy_and_magnitude(trained):
    """The kept order ranks by keep * ||x||: neither the scores' order nor
    the norms' (on the trained fixture all three differ on some image)."""
    model, x, _ = trained
    terms = keras_ersm.models.energy_terms(model, x[:16], layer="mask")
    b = len(terms["keep"])
    kept = (terms["keep"] * terms["norms"]).reshape(b, -1)
    priorities = deletion._priorities(
        ("energy", "kept", "magnitude"),
        terms["scores"],
        terms["keep"],
        terms["norms"],
        None,
        None,
    )
    np.testing.assert_array_equal(priorities["kept"], kept)
    ranks = {o: np.argsort(p, 1, kind="stable") for o, p in priorities.items()}
    assert np.any(ranks["kept"] != ranks["energy"])
    assert np.any(ranks["kept"] != ranks["magnitude"])


def test_energy_positions_follow_scores():
    scores = np.array([[0.5, 2.0, -1.0, 1.0]])
    positions = deletion.deletion_positions(-scores, "lerf")
    # Highest score first: token 1, then 3, 0, 2.
    np.testing.assert_array_equal(positions, [[2, 0, 3, 1]])
    morf = deletion.deletion_positions(-scores, "morf")
    np.testing.assert_array_equal(morf, [[1, 3, 0, 2]])


def test_random_reproducible_and_morf(trained):
    model, x, y = trained
    x, y = x[:16], y[:16]
    kwargs = dict(orders=("random",), steps=9)
    a = keras_ersm.evaluation.deletion_curve(model, (x, y), seed=7, **kwargs)
    b = keras_ersm.evaluation.deletion_curve(model, (x, y), seed=7, **kwargs)
    np.testing.assert_array_equal(a.accuracy["random"], b.accuracy["random"])
    morf = keras_ersm.evaluation.deletion_curve(
        model, (x, y), orders=("energy",), direction="morf", steps=3
    )
    assert morf.direction == "morf" and len(morf.fractions) == 3


def test_dataset_and_pydataset(trained):
    model, x, y = trained
    x, y = x[:24], y[:24]
    reference = keras_ersm.evaluation.deletion_curve(
        model, (x, y), orders=("energy",), steps=4, batch_size=8
    )

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return x[8 * i : 8 * i + 8], keras.utils.to_categorical(
                y[8 * i : 8 * i + 8], 2
            )

    from_py = keras_ersm.evaluation.deletion_curve(
        model, Batches(), orders=("energy",), steps=4
    )
    from_iterable = keras_ersm.evaluation.deletion_curve(
        model,
        [(x[i : i + 8], y[i : i + 8]) for i in range(0, 24, 8)],
        orders=("energy",),
        steps=4,
    )
    others = [from_py, from_iterable]
    try:
        import tensorflow as tf
    except ImportError:
        tf = None
    if tf is not None:
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        others.append(
            keras_ersm.evaluation.deletion_curve(
                model, dataset, orders=("energy",), steps=4
            )
        )
        with pytest.raises(ValueError, match="without labels"):
            keras_ersm.evaluation.deletion_curve(
                model, tf.data.Dataset.from_tensor_slices(x).batch(8)
            )
    for other in others:
        np.testing.assert_array_equal(
            other.accuracy["energy"], reference.accuracy["energy"]
        )


def _nested_classifier():
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    masked = keras_ersm.EnergyMask(name="inner_mask")(h)
    h = keras.layers.Add()([h, masked])
    backbone = keras.Model(inputs, h, name="backbone")
    outer = keras.Input((16, 16, 3))
    h = backbone(outer)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(outer, keras.layers.Dense(3)(h))


def test_nested_backbone_with_skip_connection():
    model = _nested_classifier()
    # Weights from NumPy (the same on every backend), a strong uneven keep
    # map and images of different colours: the masked branch is not a
    # multiple of the skip branch, so deleting it changes predictions.
    rng = np.random.default_rng(2)
    model.set_weights(
        [rng.normal(size=w.shape).astype("float32") for w in model.get_weights()]
    )
    mask = model.get_layer("backbone").get_layer("inner_mask")
    mask.kernel.assign(10.0 * keras.ops.convert_to_numpy(mask.kernel))
    x = rng.random((24, 16, 16, 3)) * rng.random((24, 1, 1, 3)) * 4.0
    x = x.astype("float32")
    logits = model.predict(x, verbose=0)
    y = np.argmax(logits, -1)
    config = model.get_config()
    result = keras_ersm.evaluation.deletion_curve(model, (x, y), steps=3)
    # Splitting leaves the model as it was.
    assert model.get_config() == config
    np.testing.assert_allclose(model.predict(x, verbose=0), logits, rtol=1e-6)
    for order in result.accuracy:
        assert result.accuracy[order][0] == 100.0
    assert result.layer == "inner_mask"
    # Deleting every token leaves the skip branch: output = head(h), h the
    # features that enter the mask (Add([h, 0]) == h).
    backbone = model.get_layer("backbone")
    h = backbone.layers[1](x)
    head = model.layers[-1](model.layers[-2](h))
    expected = 100.0 * np.mean(np.argmax(keras.ops.convert_to_numpy(head), -1) == y)
    assert expected < 100.0  # the skip branch alone predicts differently
    for order in result.accuracy:
        assert result.accuracy[order][-1] == pytest.approx(expected)


def test_errors(trained):
    model, x, y = trained
    plain = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    with pytest.raises(ValueError, match="insert_energy_masks"):
        keras_ersm.evaluation.deletion_curve(plain, (x, y))
    with pytest.raises(ValueError, match="without labels"):
        keras_ersm.evaluation.deletion_curve(model, x)
    with pytest.raises(ValueError, match="without labels"):
        keras_ersm.evaluation.deletion_curve(model, [x[:8]])
    with pytest.raises(ValueError, match="Received: layer='pool'"):
        keras_ersm.evaluation.deletion_curve(model, (x, y), layer="pool")
    with pytest.raises(ValueError, match="layer='nope'"):
        keras_ersm.evaluation.deletion_curve(model, (x, y), layer="nope")
    with pytest.raises(ValueError, match="orders"):
        keras_ersm.evaluation.deletion_curve(model, (x, y), orders=("best",))
    with pytest.raises(ValueError, match="direction"):
        keras_ersm.evaluation.deletion_curve(model, (x, y), direction="up")
    with pytest.raises(ValueError, match="steps"):
        keras_ersm.evaluation.deletion_curve(model, (x, y), steps=1)
    with pytest.raises(ValueError, match="batch_size"):
        keras_ersm.evaluation.deletion_curve(model, (x, y), batch_size=0)


def test_channels_first_same_padding_and_rescale():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((3, 16, 16))
    mask = keras_ersm.EnergyMask(
        patch_size=3, padding="same", rescale=True, data_format="channels_first"
    )
    h = mask(inputs)
    h = keras.layers.GlobalAveragePooling2D(data_format="channels_first")(h)
    dense = keras.layers.Dense(3)
    model = keras.Model(inputs, dense(h))
    x = np.random.default_rng(0).random((8, 3, 16, 16)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), -1)
    soft = keras_ersm.evaluation.deletion_curve(model, (x, y), steps=3)
    assert soft.num_tokens == 36
    assert all(acc[0] == 100.0 for acc in soft.accuracy.values())
    hard = keras_ersm.evaluation.deletion_curve(
        model, (x, y), orders=("energy",), steps=3, replace_keep=True
    )
    # replace_keep: k = 0 keeps every token unscaled, k = N zeroes the map.
    unmasked = np.argmax(keras.ops.convert_to_numpy(dense(x.mean(axis=(2, 3)))), -1)
    zeroed = np.argmax(keras.ops.convert_to_numpy(dense(np.zeros((8, 3)))), -1)
    assert hard.accuracy["energy"][0] == 100.0 * np.mean(unmasked == y)
    assert hard.accuracy["energy"][-1] == 100.0 * np.mean(zeroed == y)


def _baseline():
    """A Functional classifier without a mask, with a skip connection."""
    keras.utils.set_random_seed(4)
    bias = keras.initializers.RandomNormal(stddev=0.05)
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="c2")(h)
    skip = keras.layers.Conv2D(8, 3, padding="same", bias_initializer=bias)(h)
    h = keras.layers.Add()([h, skip])
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, bias_initializer=bias)(h))
    x = np.random.default_rng(1).random((12, 16, 16, 3)).astype("float32")
    return model, x, np.argmax(model.predict(x, verbose=0), -1)


@pytest.mark.parametrize("replace_keep", [False, True])
def test_baseline_cut_at_a_conv_equals_an_identity_mask_after_it(replace_keep):
    model, x, y = _baseline()
    result = keras_ersm.evaluation.deletion_curve(
        model, (x, y), layer="c1", replace_keep=replace_keep, batch_size=8
    )
    assert result.layer == "c1" and result.num_tokens == 256
    assert set(result.accuracy) == {"magnitude", "random", "grad_cam"}
    for curve in result.accuracy.values():
        assert curve[0] == 100.0 and len(curve) == 257
    # The same numbers as an identity EnergyMask (keep = 1, rescale=True)
    # inserted after the layer, which `evaluate` used to cut at.
    masked = keras_ersm.models.insert_energy_masks(
        model,
        "c1",
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(-30.0),
        energy_regularizer=None,
        name="identity",
    )
    reference = keras_ersm.evaluation.deletion_curve(
        masked,
        (x, y),
        layer="identity",
        orders=("magnitude", "random", "grad_cam"),
        replace_keep=replace_keep,
        batch_size=8,
    )
    for order, curve in reference.accuracy.items():
        np.testing.assert_allclose(result.accuracy[order], curve, atol=1e-9)


def test_baseline_cut_at_a_sequential_conv(trained):
    model, x, y = trained
    plain = keras.Sequential(
        [keras.Input((16, 16, 3)), model.get_layer("conv"), model.get_layer("pool")]
        + [model.get_layer("dense")]
    )
    result = keras_ersm.evaluation.deletion_curve(
        plain, (x[:16], y[:16]), layer="conv", steps=5
    )
    assert set(result.auc) == {"magnitude", "random", "grad_cam"}
    assert result.num_tokens == 256
    clean = _accuracy(plain.predict(x[:16], verbose=0), y[:16])
    zeroed = _accuracy(plain.get_layer("dense")(np.zeros((16, 8))), y[:16])
    for curve in result.accuracy.values():
        assert curve[0] == clean and curve[-1] == zeroed


def test_cut_layer_errors_name_the_layer():
    model, x, y = _baseline()
    with pytest.raises(ValueError, match="'energy'.*layer 'c2'.*not an EnergyMask"):
        keras_ersm.evaluation.deletion_curve(
            model, (x, y), layer="c2", orders=("energy", "random")
        )
    with pytest.raises(ValueError, match="'kept'.*layer 'c2'.*not an EnergyMask"):
        keras_ersm.evaluation.deletion_curve(
            model, (x, y), layer="c2", orders=("random", "kept")
        )
    with pytest.raises(ValueError, match="without 'energy', 'kept' at layer 'c2'"):
        keras_ersm.evaluation.deletion_curve(
            model, (x, y), layer="c2", orders=("kept", "energy")
        )
    with pytest.raises(ValueError, match="4-D output.*Received: layer='pool'"):
        keras_ersm.evaluation.deletion_curve(model, (x, y), layer="pool")
    with pytest.raises(ValueError, match="no EnergyMask.*4-D output"):
        keras_ersm.evaluation.deletion_curve(model, (x, y))


def test_empty_batch_in_an_iterable_is_skipped():
    # An iterable may yield an empty batch (e.g. the last one of a split);
    # keep_maps and mask_statistics skip it, and so must deletion_curve.
    model, x, y = _baseline()
    batches = [(x[:2], y[:2]), (x[:0], y[:0]), (x[2:4], y[2:4])]
    result = keras_ersm.evaluation.deletion_curve(
        model, batches, layer="c2", orders=("magnitude", "grad_cam"), steps=3
    )
    expected = keras_ersm.evaluation.deletion_curve(
        model, (x[:4], y[:4]), layer="c2", orders=("magnitude", "grad_cam"),
        steps=3, batch_size=2,
    )  # fmt: skip
    assert result.num_images == 4
    for order in expected.accuracy:
        np.testing.assert_allclose(result.accuracy[order], expected.accuracy[order])
