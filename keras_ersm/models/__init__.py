"""Building and patching models with EnergyMask layers."""

from keras_ersm.models.classifier import build_classifier
from keras_ersm.models.insertion import insert_energy_masks, insertion_points
from keras_ersm.models.inspection import energy_terms, keep_maps
from keras_ersm.models.utils import energy_mask_layers

__all__ = [
    "build_classifier",
    "energy_mask_layers",
    "energy_terms",
    "insert_energy_masks",
    "insertion_points",
    "keep_maps",
]
