"""Keras layers."""

from keras_ersm.layers.energy_mask import EnergyMask

__all__ = ["EnergyMask"]
