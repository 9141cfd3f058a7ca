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
