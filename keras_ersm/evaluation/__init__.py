"""Evaluation of occlusion robustness, deletion curves and localization."""
