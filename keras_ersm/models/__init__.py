"""Building and patching models with EnergyMask layers."""

from keras_ersm.models.utils import energy_mask_layers

__all__ = ["energy_mask_layers"]
