"""`keras_ersm/_quiet.py` must stay loadable before Keras is imported."""

import os
import subprocess
import sys

import keras_ersm


def test_quiet_module_imports_neither_keras_nor_tensorflow_when_loaded():
    path = os.path.join(os.path.dirname(keras_ersm.__file__), "_quiet.py")
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('q', {path!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "assert callable(module.import_tensorflow_quietly)\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'keras_ersm') "
        "if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
