"""Backend-specific timing harness for the benchmarks (not library code).

`compile_fn(fn, grad=False)` turns a pure function of tensors returning a
scalar into a callable that runs it the way each backend runs training code:
`jax.jit`, `tf.function(jit_compile=True)`, or torch eager (autograd when
`grad=True`). `median_time` times it after warm-up.
"""

import json
import os
import platform
import statistics
import time

import keras
import numpy as np

BACKEND = keras.backend.backend()


def compile_fn(fn, grad=False, argnums=(0, 1, 2)):
    """Returns `run(*args)` computing fn (and its gradients when grad=True)."""
    if BACKEND == "jax":
        import jax

        if grad:
            jitted = jax.jit(jax.value_and_grad(fn, argnums=argnums))
        else:
            jitted = jax.jit(fn)

        def run(*args):
            return jax.block_until_ready(jitted(*args))

        return run
    if BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(*args):
            if not grad:
                return fn(*args)
            with tf.GradientTape() as tape:
                for i in argnums:
                    tape.watch(args[i])
                value = fn(*args)
            return value, tape.gradient(value, [args[i] for i in argnums])

        def run(*args):
            out = step(*args)
            return tf.nest.map_structure(lambda t: t.numpy(), out)

        return run
    import torch

    def run(*args):
        if not grad:
            with torch.no_grad():
                return float(fn(*args))
        args = [
            a.detach().requires_grad_(True) if i in argnums else a
            for i, a in enumerate(args)
        ]
        value = fn(*args)
        value.backward()
        return float(value)

    return run


def to_backend(array):
    return keras.ops.convert_to_tensor(np.asarray(array))


def median_time(run, args, warmup=2, repeats=7):
    """Median wall time of `run(*args)` in seconds after `warmup` calls."""
    for _ in range(warmup):
        run(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine():
    return {
        "backend": BACKEND,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "device": "cpu" if not _has_gpu() else "gpu",
    }


def _has_gpu():
    if BACKEND == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if BACKEND == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def write_json(path, payload):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def set_threads(threads):
    """Pins torch's intra-op threads (the XLA backends keep their own)."""
    if threads and BACKEND == "torch":
        import torch

        torch.set_num_threads(threads)


def threads():
    if BACKEND == "torch":
        import torch

        return torch.get_num_threads()
    return os.cpu_count()


def elementwise_pass_time(x, repeats=7):
    """Median time of one elementwise multiply of `x` into a new tensor.

    The unit of "passes": a layer call costing `t` is `t / pass` passes.
    """
    if BACKEND == "jax":
        import jax

        fn = jax.jit(lambda t: t * 2.0)
        return median_time(lambda: jax.block_until_ready(fn(x)), (), repeats=repeats)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda t: t * 2.0, jit_compile=True)
        return median_time(lambda: fn(x), (), repeats=repeats)
    import torch

    with torch.no_grad():
        return median_time(lambda: x * 2.0, (), repeats=repeats)
