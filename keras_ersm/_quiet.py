"""TensorFlow imported without its start-up lines (standard library only).

This module imports nothing from Keras or keras_ersm, so a script can load
it by path and call it before `import keras` imports TensorFlow (as
`examples/train_cifar.py` does); `keras_ersm.datasets.load_cifar10` calls
it before tensorflow-datasets imports TensorFlow.
"""

import os
import sys
import tempfile

# TensorFlow's start-up lines, printed by its C++ code straight to the
# stderr file descriptor on first import and device discovery
# (TF_CPP_MIN_LOG_LEVEL does not reach them since TensorFlow 2.19).
_STARTUP_NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations",
    "Could not find cuda drivers",
    "cpu_feature_guard",
    "To enable the following instructions",
    "failed call to cuInit",
    "Unable to register cu",
    "computation placer already registered",
)


def import_tensorflow_quietly():
    """Imports TensorFlow (when installed) with its start-up lines dropped.

    The stderr file descriptor goes to a temporary file during the import
    and device discovery; afterwards every line that is not start-up noise
    is written to stderr, so real warnings still show.
    """
    import importlib.util

    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # where cuInit complains
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
    for line in text.splitlines():
        if line.strip() and not any(noise in line for noise in _STARTUP_NOISE):
            print(line, file=sys.stderr)
