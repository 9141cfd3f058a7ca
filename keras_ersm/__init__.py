"""keras_ersm: Energy-Regularized Spatial Masking for Keras 3."""

from keras_ersm import callbacks, datasets, evaluation, models, visualization
from keras_ersm import saving as saving  # keras_ersm.saving, like keras.saving
from keras_ersm.layers.energy_mask import EnergyMask
from keras_ersm.regularizers import EnergyRegularizer

__version__ = "0.1.0"

__all__ = [
    "EnergyMask",
    "EnergyRegularizer",
    "callbacks",
    "datasets",
    "evaluation",
    "models",
    "visualization",
    "__version__",
]
