"""`verbose=` of the evaluation functions: a Progbar per batch, as `evaluate`."""

import keras
import numpy as np
import pytest

from keras_ersm import evaluation
from keras_ersm.evaluation import _progress, _test_utils


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[part], self.y[part]


def test_num_batches():
    x, y, _ = _test_utils.synthetic_data(num=10)
    assert _progress.num_batches((x, y), 4) == 3
    assert _progress.num_batches(x, 5) == 2
    assert _progress.num_batches(_Batches(x, y, 4), 99) == 3
    assert _progress.num_batches([(x, y), (x, y)], 4) == 2
    assert _progress.num_batches(iter([(x, y)]), 4) is None


@pytest.mark.parametrize("verbose", [True, 3, "yes", -1])
def test_invalid_verbose(verbose):
    x, y, _ = _test_utils.synthetic_data(num=4)
    model = _test_utils.tiny_model()
    with pytest.raises(ValueError, match="verbose"):
        evaluation.occlusion_robustness(model, (x, y), verbose=verbose)


def test_every_evaluation_function_reports_progress(capsys):
    x, y, objects = _test_utils.synthetic_data(num=12)
    model = _test_utils.tiny_model()
    calls = {
        "deletion_curve": lambda v: evaluation.deletion_curve(
            model, (x, y), orders=("energy",), steps=3, batch_size=4, verbose=v
        ),
        "occlusion_robustness": lambda v: evaluation.occlusion_robustness(
            model,
            (x, y),
            patch_sizes=(4,),
            fractions=(0.25,),
            hide_sizes=(),
            batch_size=4,
            verbose=v,
        ),
        "mask_statistics": lambda v: evaluation.mask_statistics(
            model, x, batch_size=4, verbose=v
        ),
        "mask_localization": lambda v: evaluation.mask_localization(
            model, x, objects, batch_size=4, verbose=v
        ),
        "grad_cam": lambda v: evaluation.grad_cam(model, x, batch_size=4, verbose=v),
    }
    for name, call in calls.items():
        capsys.readouterr()
        call(0)
        assert capsys.readouterr().out == "", name
        call(1)
        assert "3/3" in capsys.readouterr().out, name
        call(2)
        out = capsys.readouterr().out
        assert "3/3" in out and out.count("\n") == 1, (name, out)
    assert np.isfinite(calls["grad_cam"]("auto")).all()
