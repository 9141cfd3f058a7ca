"""Mask options tried in the benchmarks and not adopted by the library.

`ExperimentalMask` is an `EnergyMask` with two more switches, kept here so
that every configuration in `benchmarks/results/` can be rerun; neither
passed the trainability matrix's failing cells (docs/benchmarks.md,
"Trainability"), so neither is part of `keras_ersm`:

- `norm_rescale=True`: the masked map is divided by each image's mean keep
  weighted by the tokens' norms instead of the plain mean keep, so
  `sum_i keep_i ||x_i||` equals `sum_i ||x_i||` and empty (all-zero)
  tokens cannot dilute the gain of the others. Needs `rescale=True`.
- `score_feature_gradient=0.0`: no gradient from the scores (task or
  energy) reaches the features; the backbone trains only through the
  masked values `x * keep`.
"""

import keras
from keras import ops

import keras_ersm
from keras_ersm import ops as ersm_ops


@keras.saving.register_keras_serializable(package="keras_ersm_benchmarks")
class ExperimentalMask(keras_ersm.EnergyMask):
    def __init__(self, norm_rescale=False, score_feature_gradient=1.0, **kwargs):
        super().__init__(**kwargs)
        if score_feature_gradient not in (0.0, 1.0):
            raise ValueError(
                "`score_feature_gradient` must be 0.0 or 1.0. Received: "
                f"score_feature_gradient={score_feature_gradient!r}"
            )
        if norm_rescale and not self.rescale:
            raise ValueError(
                "`norm_rescale=True` needs `rescale=True`. Received: "
                f"rescale={self.rescale!r}"
            )
        self.norm_rescale = bool(norm_rescale)
        self.score_feature_gradient = float(score_feature_gradient)

    def _norm_mean_keep(self, inputs, keep):
        """Each image's keep averaged with the tokens' norms as weights."""
        norms = ops.stop_gradient(ersm_ops.token_norms(self._tokens(inputs)))
        peak = ops.max(norms, axis=(1, 2), keepdims=True)
        weights = norms / ops.where(peak > 0, peak, ops.ones_like(peak))
        total = ops.sum(weights, axis=(1, 2), keepdims=True)
        weighted = ops.sum(keep * weights, axis=(1, 2), keepdims=True)
        plain = ops.mean(keep, axis=(1, 2), keepdims=True)
        safe_total = ops.where(total > 0, total, ops.ones_like(total))
        return ops.where(total > 0, weighted / safe_total, plain)

    def apply_keep(self, inputs, keep):
        if not self.norm_rescale:
            return super().apply_keep(inputs, keep)
        inputs = self._as_float(inputs)
        keep = ops.cast(keep, "float32")
        keep = keep / (self._norm_mean_keep(inputs, keep) + ersm_ops.EPSILON)
        keep = ersm_ops.upsample_tokens(keep, self.patch_size)
        axis = 1 if self.data_format == "channels_first" else -1
        return inputs * ops.expand_dims(ops.cast(keep, inputs.dtype), axis)

    def call(self, inputs, training=None):
        scored = inputs
        if self.score_feature_gradient == 0.0:
            scored = ops.stop_gradient(self._as_float(inputs))
        with_energy = self.energy_regularizer is not None
        terms = self._compute_terms(scored, for_energy=with_energy)
        if with_energy:
            self.add_loss(self._energy_loss(terms))
        return self.apply_keep(inputs, terms["keep"])

    def get_config(self):
        return {
            **super().get_config(),
            "norm_rescale": self.norm_rescale,
            "score_feature_gradient": self.score_feature_gradient,
        }


def build_classifier(backbone, num_classes, **kwargs):
    """backbone -> `ExperimentalMask(**kwargs)` -> pooling -> Dense, sharing
    the backbone's layers (the benchmarks build a fresh backbone per run)."""
    x = ExperimentalMask(name="energy_mask", **kwargs)(backbone.output)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="predictions")(x)
    return keras.Model(backbone.inputs, outputs)
