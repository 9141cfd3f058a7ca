"""Mask options tried in the benchmarks and not adopted by the library.

`ExperimentalMask` is an `EnergyMask` with one more switch, kept here so
that every configuration in `benchmarks/results/` can be rerun; it did not
pass the trainability matrix's failing cells (docs/benchmarks.md,
"Trainability"), so it is not part of `keras_ersm`. (Another, the scores'
gradient into the features switched off, became
`EnergyMask(keep_feature_gradient=0.0)`.)

- `norm_rescale=True`: the masked map is divided by each image's mean keep
  weighted by the tokens' norms instead of the plain mean keep, so
  `sum_i keep_i ||x_i||` equals `sum_i ||x_i||` and empty (all-zero)
  tokens cannot dilute the gain of the others. Needs `rescale=True`.
- `context=True`: each score gets a term that compares the token with the
  image's mean normalised token, channel by channel, through a trainable
  vector `u` (zeros at first, so training starts from the plain layer):
  `z_i += sum_c u_c g_c p_hat_ic` with `g = mean_j p_hat_j`, so a token's
  score can depend on what the image's tokens share on average, which one
  token alone does not see (docs/benchmarks.md, "Quality"). The energy's
  copy of the term follows `energy_feature_gradient` and
  `energy_kernel_gradient` as the kernel's does.
- `relative_score=True`: each score reads its token divided by the
  image's mean token norm, `z_i = w . x_i / mean_j ||x_j|| + b`, instead
  of the unit token `p_hat_i`: the token's direction *and* its strength
  relative to the image, still free of the features' overall scale
  (`benchmarks/score_ceiling.py`: one direction on the unit token cannot
  localise like the class map; on these tokens it can). The energy's
  redundancy still reads `p_hat`. Only with the default gradient scales
  (`energy_feature_gradient=0`, `energy_kernel_gradient=1`).
- `align_weight=λ > 0`: a second training signal for the ranking, the
  model's own class map. In training the layer adds
  `λ * mean_b CE(q_b, softmax_i(-z_i / T))`, where `q_bi` is the class
  activation map `max(0, w_c . x_i)` of the predicted class `c`, read from
  the `Dense` head after global average pooling (`attach_head`) and
  normalised to sum to 1 over the image's tokens, and `z` the scores of the
  features with their gradient stopped: the loss trains the scores'
  weights (the kernel, the norm weight) to order the tokens as the class
  map does, and nothing else (the bias cancels in the softmax and gets no
  gradient; the keep level still moves as the kernel's scale spreads the
  scores). The task's own gradient on the keep scales with the loss's
  gradient, which shrinks as the model fits its training images; this
  target does not (issue 13, docs/benchmarks.md, "Quality").
  Needs `patch_size=1` and channels_last.
"""

import keras
from keras import ops

import keras_ersm
from keras_ersm import ops as ersm_ops
from keras_ersm.layers.energy_mask import _scale_gradient


@keras.saving.register_keras_serializable(package="keras_ersm_benchmarks")
class ExperimentalMask(keras_ersm.EnergyMask):
    def __init__(
        self,
        norm_rescale=False,
        context=False,
        relative_score=False,
        align_weight=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.align_weight = float(align_weight)
        if self.align_weight < 0:
            raise ValueError(
                f"`align_weight` must be >= 0. Received: align_weight={align_weight!r}"
            )
        if self.align_weight and (
            self.patch_size != 1 or self.data_format != "channels_last"
        ):
            raise ValueError(
                "`align_weight > 0` needs patch_size=1 and channels_last. "
                f"Received: patch_size={self.patch_size!r}, "
                f"data_format={self.data_format!r}"
            )
        # The Dense head whose class map is the target; not tracked as a
        # sublayer (it belongs to the model), so it is set with
        # `object.__setattr__` by `attach_head`.
        object.__setattr__(self, "_head", None)
        self.context = bool(context)
        self.relative_score = bool(relative_score)
        if relative_score and (
            self.energy_feature_gradient != 0.0 or self.energy_kernel_gradient != 1.0
        ):
            raise ValueError(
                "`relative_score=True` needs energy_feature_gradient=0 and "
                "energy_kernel_gradient=1. Received: energy_feature_gradient="
                f"{self.energy_feature_gradient!r}, energy_kernel_gradient="
                f"{self.energy_kernel_gradient!r}"
            )
        if relative_score and (context or self.norm_score):
            raise ValueError(
                "`relative_score=True` cannot be combined with `context` or "
                f"`norm_score`. Received: context={context!r}, "
                f"norm_score={self.norm_score!r}"
            )
        if norm_rescale and not self.rescale:
            raise ValueError(
                "`norm_rescale=True` needs `rescale=True`. Received: "
                f"rescale={self.rescale!r}"
            )
        if norm_rescale and self.padding == "same" and self.patch_size > 1:
            # `apply_keep` below does not crop the padded keep map back.
            raise ValueError(
                "`norm_rescale=True` supports padding='valid' only for "
                f"patch_size > 1. Received: padding={self.padding!r}, "
                f"patch_size={self.patch_size}"
            )
        self.norm_rescale = bool(norm_rescale)

    def build(self, input_shape):
        super().build(input_shape)
        if self.context:
            self.context_kernel = self.add_weight(
                name="context_kernel",
                shape=(self.kernel.shape[0],),
                initializer="zeros",
                autocast=False,
            )

    def _context_term(self, agreement, feature_scale=1.0, kernel_scale=1.0):
        """`sum_c u_c agreement_c`; its gradient to the features is scaled by
        `feature_scale` and to `u` by `kernel_scale` (same values)."""
        agreement = _scale_gradient(agreement, feature_scale)
        u = _scale_gradient(ops.cast(self.context_kernel, "float32"), kernel_scale)
        return ops.sum(agreement * u, axis=-1)

    def _relative_scores(self, inputs):
        """`w . x_i / mean_j ||x_j|| + b`, and the same values with the
        features' gradient stopped (the energy's copy)."""
        unit, inv = ersm_ops.unit_tokens(self._tokens(inputs))
        # ||unit_j|| = 1 / inv_j up to epsilon, with a finite gradient at an
        # all-zero token (`ops.norm`'s is NaN there); unit's overflow scale
        # cancels in the ratio.
        mean_norm = ops.mean(1.0 / inv, axis=(1, 2), keepdims=True)
        scale = 1.0 / (mean_norm + ersm_ops.EPSILON)
        kernel = ops.cast(self.kernel, "float32")
        bias = ops.cast(self.bias, "float32")
        scores = ops.matmul(unit, kernel)[..., 0] * scale + bias
        frozen = ops.matmul(ops.stop_gradient(unit), kernel)[..., 0]
        energy_scores = frozen * ops.stop_gradient(scale) + bias
        return scores, energy_scores

    def _compute_terms(self, inputs, for_energy=True):
        terms = super()._compute_terms(inputs, for_energy)
        if self.relative_score:
            scores, energy_scores = self._relative_scores(inputs)
            terms["scores"], terms["keep"] = scores, self._keep(scores)
            if for_energy:
                terms["energy_scores"] = energy_scores
                terms["energy_keep"] = self._keep(energy_scores)
            return terms
        if not self.context:
            return terms
        unit, inv = ersm_ops.unit_tokens(self._tokens(inputs))
        p_hat = unit * inv[..., None]
        agreement = p_hat * ops.mean(p_hat, axis=(1, 2), keepdims=True)
        terms["scores"] = terms["scores"] + self._context_term(agreement)
        terms["keep"] = self._keep(terms["scores"])
        if for_energy:
            terms["energy_scores"] = terms["energy_scores"] + self._context_term(
                agreement, self.energy_feature_gradient, self.energy_kernel_gradient
            )
            terms["energy_keep"] = self._keep(terms["energy_scores"])
        return terms

    def attach_head(self, dense):
        """Sets the `Dense` layer (after global average pooling) whose class
        map `align_weight` aligns the scores with."""
        object.__setattr__(self, "_head", dense)

    def _align_loss(self, inputs, masked):
        """Cross-entropy of the keep logits' softmax against the predicted
        class's map (normalised), the features' gradient stopped."""
        x = ops.stop_gradient(self._as_float(inputs))
        x = ops.cast(x, "float32")
        kernel = ops.stop_gradient(ops.cast(self._head.kernel, "float32"))
        bias = ops.stop_gradient(ops.cast(self._head.bias, "float32"))
        pooled = ops.mean(ops.cast(ops.stop_gradient(masked), "float32"), axis=(1, 2))
        predicted = ops.argmax(ops.matmul(pooled, kernel) + bias, axis=-1)
        class_weights = ops.take(ops.transpose(kernel), predicted, axis=0)  # (B, C)
        cam = ops.relu(ops.einsum("bhwc,bc->bhw", x, class_weights))
        total = ops.sum(cam, axis=(1, 2), keepdims=True)
        count = float(cam.shape[1] * cam.shape[2])
        target = ops.where(
            total > 0, cam / ops.where(total > 0, total, 1.0), 1.0 / count
        )
        scores = self._compute_terms(x, for_energy=False)["scores"]
        logits = ops.reshape(-scores / self.temperature, (ops.shape(scores)[0], -1))
        log_p = ops.log_softmax(logits, axis=-1)
        target = ops.reshape(target, ops.shape(log_p))
        return -ops.mean(ops.sum(target * log_p, axis=-1))

    def call(self, inputs, training=None):
        masked = super().call(inputs, training=training)
        if self.align_weight and training and self._head is not None:
            self.add_loss(self.align_weight * self._align_loss(inputs, masked))
        return masked

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
        # `EnergyMask.apply_keep` with the norm-weighted mean keep in place
        # of the plain one (the library has no hook for the divisor).
        if not self.norm_rescale:
            return super().apply_keep(inputs, keep)
        inputs = self._as_float(inputs)
        keep = ops.cast(keep, "float32")
        keep = keep / (self._norm_mean_keep(inputs, keep) + ersm_ops.EPSILON)
        keep = ersm_ops.upsample_tokens(keep, self.patch_size)
        axis = 1 if self.data_format == "channels_first" else -1
        return inputs * ops.expand_dims(ops.cast(keep, inputs.dtype), axis)

    def get_config(self):
        return {
            **super().get_config(),
            "norm_rescale": self.norm_rescale,
            "context": self.context,
            "relative_score": self.relative_score,
            "align_weight": self.align_weight,
        }


def build_classifier(backbone, num_classes, **kwargs):
    """backbone -> `ExperimentalMask(**kwargs)` -> pooling -> Dense, sharing
    the backbone's layers (the benchmarks build a fresh backbone per run)."""
    mask = ExperimentalMask(name="energy_mask", **kwargs)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(mask(backbone.output))
    head = keras.layers.Dense(num_classes, name="predictions")
    outputs = head(x)
    mask.attach_head(head)
    return keras.Model(backbone.inputs, outputs)
