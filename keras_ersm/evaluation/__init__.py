"""Evaluation of occlusion robustness, deletion curves and localization.

Batched functions that return small result objects with `.to_dict()` (JSON)
and `.plot()` (a matplotlib Figure). The protocols are described in the
docs page `docs/guides/evaluation.md` ("Evaluating occlusion, deletion and
localization").
"""

from keras_ersm.evaluation.deletion import DeletionCurveResult, deletion_curve
from keras_ersm.evaluation.gradients import grad_cam
from keras_ersm.evaluation.localization import LocalizationResult, mask_localization
from keras_ersm.evaluation.occlusion import OcclusionResult, occlusion_robustness
from keras_ersm.evaluation.statistics import MaskStatisticsResult, mask_statistics

__all__ = [
    "DeletionCurveResult",
    "LocalizationResult",
    "MaskStatisticsResult",
    "OcclusionResult",
    "deletion_curve",
    "grad_cam",
    "mask_localization",
    "mask_statistics",
    "occlusion_robustness",
]
