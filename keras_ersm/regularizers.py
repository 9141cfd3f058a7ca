"""The energy of ERSM as a Keras regularizer."""

import keras
from keras import ops

from keras_ersm import _validation


# Not a `keras.regularizers.Regularizer`: a Keras regularizer is called on one
# weight tensor (`kernel_regularizer=`, `activity_regularizer=`, ...), and the
# ERSM energy has no meaning for one tensor: it needs the keep map, the scores
# and the neighbour redundancy that only an `EnergyMask` computes. Claiming the
# base class let `Dense(kernel_regularizer=EnergyRegularizer())` be accepted
# and fail later. The registered name is unchanged, so `.keras` files and
# configs written while it subclassed `Regularizer` still load.
@keras.saving.register_keras_serializable(package="keras_ersm")
class EnergyRegularizer:
    """Turns an `EnergyMask`'s keep map, scores and redundancy into a loss.

    The loss term of an `EnergyMask` (its `energy_regularizer` argument), not
    a `keras.regularizers.Regularizer`: it takes three tensors, not a layer's
    weight, so it cannot be given to `kernel_regularizer=` or
    `activity_regularizer=` (called with one tensor it raises a `TypeError`
    saying so). It serializes like any Keras object
    (`keras.saving.serialize_keras_object`, `get_config` / `from_config`).

    Per token `i`, the energy is

        E_i = unary * softplus(z_i) + pairwise * softplus(S_i)

    and the loss is `weight * mean(keep_i * E_i)` over the batch and the
    tokens, exactly the reference ERSM loss when `weight=1`. The energy is
    computed in float32 whatever the inputs' dtype.

    Args:
        unary: finite non-negative float, `lambda`, the weight of the
            score term. Defaults to `1e-3`.
        pairwise: finite non-negative float, `gamma`, the weight of the
            neighbour redundancy term. Defaults to `1e-3`.
        weight: finite non-negative float multiplying the whole loss.
            Defaults to `1.0`.

    NaN or Inf weights raise a `ValueError` naming the argument (also when
    a `.keras` file holding one is loaded); numpy scalars are accepted.

    Call arguments:
        keep: keep probabilities, shape `(B, gh, gw)`.
        scores: scores `z`, same shape.
        redundancy: neighbour redundancy `S`, same shape.

    Returns:
        A float32 scalar.

    Examples:

    ```python
    import numpy as np
    import keras_ersm
    reg = keras_ersm.EnergyRegularizer(unary=1e-3, pairwise=1e-3)
    keep = np.full((2, 4, 4), 0.5, "float32")
    scores = np.zeros((2, 4, 4), "float32")
    loss = reg(keep, scores, scores)
    assert abs(float(loss) - 0.5 * 2e-3 * np.log(2.0)) < 1e-7
    ```
    """

    def __init__(self, unary=1e-3, pairwise=1e-3, weight=1.0):
        self.unary = _validation.check_number("unary", unary, non_negative=True)
        self.pairwise = _validation.check_number(
            "pairwise", pairwise, non_negative=True
        )
        self.weight = _validation.check_number("weight", weight, non_negative=True)

    def energy(self, scores, redundancy):
        """Per-token energy `E`, float32, same shape as `scores`."""
        scores = ops.cast(scores, "float32")
        redundancy = ops.cast(redundancy, "float32")
        return self.unary * ops.softplus(scores) + self.pairwise * ops.softplus(
            redundancy
        )

    def __call__(self, keep, scores=None, redundancy=None):
        if scores is None or redundancy is None:
            raise TypeError(
                "`EnergyRegularizer` is not a Keras weight regularizer: it is "
                "called with three tensors, `(keep, scores, redundancy)`, by "
                "an `EnergyMask` (pass it as `EnergyMask(energy_regularizer="
                "...)`), not as a layer's `kernel_regularizer` or "
                "`activity_regularizer`. Received: one tensor of shape "
                f"{getattr(keep, 'shape', type(keep).__name__)}"
            )
        keep = ops.cast(keep, "float32")
        energy = self.energy(scores, redundancy)
        # mean(keep * energy), and 0 (not NaN) for an empty batch.
        count = ops.sum(ops.ones_like(energy))
        return self.weight * ops.divide_no_nan(ops.sum(keep * energy), count)

    def get_config(self):
        return {
            "unary": self.unary,
            "pairwise": self.pairwise,
            "weight": self.weight,
        }

    @classmethod
    def from_config(cls, config):
        """Builds an `EnergyRegularizer` from `get_config()`'s dict."""
        return cls(**config)

    def __repr__(self):
        return (
            f"EnergyRegularizer(unary={self.unary}, pairwise={self.pairwise}, "
            f"weight={self.weight})"
        )
