"""Progress bars for the evaluation functions (internal).

`verbose` means what it means for `model.evaluate`: `0` silent, `1` (or
`"auto"`) a `keras.utils.Progbar` updated per batch, `2` one line when done.
"""

import math

import keras

from keras_ersm._validation import invalid
from keras_ersm.evaluation import _data


def check_verbose(verbose):
    """Returns 0, 1 or 2; `"auto"` means 1."""
    if verbose == "auto":
        return 1
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise invalid("verbose", '0, 1, 2 or "auto"', verbose)
    return verbose


def num_batches(data, batch_size):
    """Batches `iter_batches(data, batch_size)` yields, or None if unknown."""
    if isinstance(data, tuple) and len(data) in (2, 3) and _data._is_inputs(data[0]):
        data = data[0]
    if _data._is_inputs(data):
        return math.ceil(_data.batch_size_of(data) / batch_size)
    if isinstance(data, keras.utils.PyDataset):
        return data.num_batches
    try:
        count = len(data)
    except Exception:  # tf.data with unknown cardinality, generators
        return None
    return count if count >= 0 else None


def track(batches, data, batch_size, verbose):
    """`batches`, advancing a Progbar after each one when `verbose`."""
    verbose = check_verbose(verbose)
    if not verbose:
        return batches
    return _tracked(batches, num_batches(data, batch_size), verbose)


def _tracked(batches, target, verbose):
    bar = keras.utils.Progbar(target, verbose=verbose, unit_name="batch")
    done = 0
    for item in batches:
        yield item
        done += 1
        bar.update(done)
    if target is None or done < target:
        bar.update(done, finalize=True)
