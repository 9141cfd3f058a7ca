"""`ExperimentalMask(align_weight=...)` (benchmarks/_experimental.py): the
scores trained to order the tokens as the model's own class map does
(issue 13, docs/benchmarks.md, "Quality")."""

import numpy as np
import pytest


def _mask_and_head(weight=1.0, seed=0, **kwargs):
    import keras

    from benchmarks import _experimental

    rng = np.random.default_rng(seed)
    x = rng.random((3, 4, 4, 6)).astype("float32")
    x[:, 0, 0] = 0.0  # an all-zero token, as ReLU features have
    mask = _experimental.ExperimentalMask(align_weight=weight, **kwargs)
    mask.build(x.shape)
    mask.kernel.assign(rng.normal(size=mask.kernel.shape))
    head = keras.layers.Dense(5)
    head.build((None, 6))
    head.kernel.assign(rng.normal(size=(6, 5)))
    head.bias.assign(rng.normal(size=(5,)))
    mask.attach_head(head)
    return mask, head, x


def _numpy_align_loss(mask, head, x):
    import keras

    np_ = keras.ops.convert_to_numpy
    masked = np_(mask.apply_keep(x, mask.energy_terms(x)["keep"]))
    kernel, bias = np_(head.kernel), np_(head.bias)
    predicted = (masked.mean(axis=(1, 2)) @ kernel + bias).argmax(axis=-1)
    scores = np_(mask.energy_terms(x)["scores"]).reshape(len(x), -1)
    logits = -scores / mask.temperature
    log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    total = 0.0
    for b, c in enumerate(predicted):
        cam = np.maximum(x[b].reshape(-1, x.shape[-1]) @ kernel[:, c], 0.0)
        target = cam / cam.sum()
        total -= (target * log_p[b]).sum()
    return total / len(x)


@pytest.mark.parametrize(
    "kwargs", [{}, {"relative_score": True}, {"norm_score": True, "norm_init": -1.0}]
)
def test_the_align_loss_is_the_cross_entropy_against_the_predicted_class_map(kwargs):
    import keras

    # Whatever the score's form, the loss reads the layer's own scores.
    mask, head, x = _mask_and_head(**kwargs)
    masked = mask.apply_keep(x, mask.energy_terms(x)["keep"])
    loss = float(keras.ops.convert_to_numpy(mask._align_loss(x, masked)))
    np.testing.assert_allclose(loss, _numpy_align_loss(mask, head, x), rtol=1e-5)


def test_the_loss_is_added_in_training_only_and_weighted():
    import keras

    mask, head, x = _mask_and_head(weight=0.5)
    mask(x, training=False)
    assert len(mask.losses) == 1  # the energy only
    mask(x, training=True)
    assert len(mask.losses) == 2
    energy, align = (float(keras.ops.convert_to_numpy(v)) for v in mask.losses)
    np.testing.assert_allclose(align, 0.5 * _numpy_align_loss(mask, head, x), rtol=1e-5)


def test_the_loss_trains_the_kernel_toward_the_class_map_order():
    import keras

    # The class map of every image is its first channel: aligning the
    # scores must make the keep rank the tokens by it.
    mask, head, x = _mask_and_head(weight=1.0, seed=1)
    kernel = np.zeros((6, 5), "float32")
    kernel[0] = 1.0
    head.kernel.assign(kernel)
    head.bias.assign(np.zeros(5, "float32"))
    optimizer = keras.optimizers.Adam(0.05)

    def rank_agreement():
        keep = keras.ops.convert_to_numpy(mask.energy_terms(x)["keep"])
        return np.mean(
            [
                np.corrcoef(keep[b].ravel(), x[b, ..., 0].ravel())[0, 1]
                for b in range(len(x))
            ]
        )

    before = rank_agreement()
    for _ in range(60):
        if keras.backend.backend() == "jax":
            import jax
            from keras import StatelessScope

            def stateless(k):
                with StatelessScope(state_mapping=[(mask.kernel, k)]):
                    masked = mask.apply_keep(x, mask.energy_terms(x)["keep"])
                    return mask._align_loss(x, masked)

            grad = jax.grad(stateless)(mask.kernel.value)
        elif keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                masked = mask.apply_keep(x, mask.energy_terms(x)["keep"])
                loss = mask._align_loss(x, masked)
            grad = tape.gradient(loss, mask.kernel.value)
        else:
            masked = mask.apply_keep(x, mask.energy_terms(x)["keep"])
            loss = mask._align_loss(x, masked)
            mask.kernel.value.grad = None
            loss.backward()
            grad = mask.kernel.value.grad
        optimizer.apply([grad], [mask.kernel])
    after = rank_agreement()
    assert after > 0.8 > before


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"align_weight": -1.0}, "align_weight=-1.0"),
        ({"align_weight": 1.0, "patch_size": 2}, "patch_size=2"),
        ({"align_weight": 1.0, "data_format": "channels_first"}, "channels_first"),
    ],
)
def test_align_refuses_what_it_does_not_support_by_value(kwargs, named):
    from benchmarks import _experimental

    with pytest.raises(ValueError, match=named):
        _experimental.ExperimentalMask(**kwargs)


def test_the_class_map_fit_recovers_a_planted_order():
    from benchmarks import class_map_fit

    rng = np.random.default_rng(0)
    n, tokens, depth = 300, 16, 5
    x = rng.normal(size=(n, tokens, depth))
    truth = np.array([2.0, -1.0, 0.0, 0.5, 0.0])
    logits = x @ truth
    target = np.exp(logits - logits.max(axis=1, keepdims=True))
    target /= target.sum(axis=1, keepdims=True)
    scores, ce, _ = class_map_fit.ce_fit(x[:200], target[:200], x[200:], steps=500)
    # The fitted scores order the test tokens as the planted direction does.
    agreement = np.mean(
        [np.corrcoef(s, t)[0, 1] for s, t in zip(scores, logits[200:], strict=True)]
    )
    assert agreement > 0.95
    assert ce < np.log(tokens)


def test_the_align_loss_sends_no_gradient_into_the_features():
    import keras

    from keras_ersm.testing.test_case import input_gradient

    mask, _, x = _mask_and_head()

    def loss(v):
        return mask._align_loss(v, mask.apply_keep(v, mask.energy_terms(v)["keep"]))

    np.testing.assert_array_equal(input_gradient(loss, x), 0.0)
    # The check can fail: the keep itself does depend on the features.
    keep_sum = input_gradient(lambda v: keras.ops.sum(mask.energy_terms(v)["keep"]), x)
    assert np.abs(keep_sum).max() > 0


def test_class_map_fit_writes_its_report(tmp_path):
    import json

    from benchmarks import class_map_fit

    class_map_fit.main(
        ["--seeds", "0", "--n-train", "64", "--n-test", "32", "--epochs", "1"]
        + ["--output-dir", str(tmp_path)]
    )
    (path,) = tmp_path.glob("class_map_fit_*.json")
    (run,) = json.loads(path.read_text())["runs"]
    for form in ("unit", "unit_and_relative_norm", "relative"):
        assert 0.0 <= run[form]["pointing_game"] <= 1.0
        assert run[form]["train_ce"] <= run["ce_uniform"] + 1e-9
