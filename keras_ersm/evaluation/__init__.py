"""Evaluation of occlusion robustness, deletion curves and localization.

Batched functions that return small result objects with `.to_dict()` (JSON)
and `.plot()` (a matplotlib Figure); `evaluate` runs them all on one model
and returns an `EvaluationResult` with `.to_markdown()` and `.save_plots()`.
The protocols are described in the docs page `docs/guides/evaluation.md`
("Evaluating occlusion, deletion and localization").
"""

from keras_ersm.evaluation.deletion import DeletionCurveResult, deletion_curve
from keras_ersm.evaluation.gradients import grad_cam
from keras_ersm.evaluation.localization import LocalizationResult, mask_localization
from keras_ersm.evaluation.occlusion import OcclusionResult, occlusion_robustness
from keras_ersm.evaluation.report import EvaluationResult, evaluate
from keras_ersm.evaluation.statistics import MaskStatisticsResult, mask_statistics

__all__ = [
    "DeletionCurveResult",
    "EvaluationResult",
    "LocalizationResult",
    "MaskStatisticsResult",
    "OcclusionResult",
    "deletion_curve",
    "evaluate",
    "grad_cam",
    "mask_localization",
    "mask_statistics",
    "occlusion_robustness",
]
