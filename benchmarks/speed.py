"""Speed and memory benchmarks of the EnergyMask layer.

Sections (each writes into one JSON and one Markdown file per backend):

1. `layer`: EnergyMask forward and forward+backward against the naive
   implementation in `benchmarks/naive.py` (eight shifted copies,
   unfold/fold), side by side in one process, at sizes from
   (32, 7, 7, 2048) to (16, 56, 56, 256), p = 1 and 2. Outputs of the two
   are checked to agree before timing.
2. `overhead`: one training step of a keras.applications backbone with one
   EnergyMask at its last feature map against the same backbone without it
   (`model.train_on_batch`, jit where the backend jits).
3. `memory` (JAX only): temporary memory of the compiled forward+backward
   from XLA's memory analysis, against the number of tokens; it must grow
   linearly.

Usage:

    KERAS_BACKEND=torch python -m benchmarks.speed --sections layer
    KERAS_BACKEND=torch python -m benchmarks.speed --sections layer --patch-sizes 1 \
        --shapes '32,7,7,2048;16,28,28,256' --compare-previous
    KERAS_BACKEND=jax python -m benchmarks.speed
    KERAS_BACKEND=jax python -m benchmarks.speed --quick

The deletion-curve cost lives in `benchmarks/deletion_cost.py`.
"""

import argparse
import os
import shlex

import keras
import numpy as np
from keras import ops

import keras_ersm
from benchmarks import _harness
from benchmarks.naive import naive_ersm, previous_unit_tokens_and_pairs
from keras_ersm import ops as ersm_ops

SIZES = [(32, 7, 7, 2048), (32, 14, 14, 1024), (16, 28, 28, 512), (16, 56, 56, 256)]
RESULTS = os.path.join(os.path.dirname(__file__), "results")


def _layer_fn(layer):
    """A pure function (x, kernel, bias) -> scalar through the real layer."""

    def fn(x, kernel, bias):
        out, _, losses = layer.stateless_call([kernel, bias], [], x, return_losses=True)
        return ops.sum(out) * 1e-3 + losses[0]

    return fn


def _naive_fn(p):
    def fn(x, kernel, bias):
        out, loss = naive_ersm(x, kernel, bias, p=p)
        return ops.sum(out) * 1e-3 + loss

    return fn


def _with_previous_ops(fn):
    """`fn` with the layer's fast path swapped for the one before issue 17."""

    def wrapped(*args):
        current = ersm_ops.unit_tokens_and_pairs
        ersm_ops.unit_tokens_and_pairs = previous_unit_tokens_and_pairs
        try:
            return fn(*args)
        finally:
            ersm_ops.unit_tokens_and_pairs = current

    return wrapped


def _interleaved_medians(runners, args, repeats, warmup=2):
    """Median time of each runner, calls interleaved so that load on a
    shared machine hits all of them alike.

    Each timed call follows an untimed call of the same runner, so that
    every runner is timed in its steady state: right after another
    implementation's large temporaries are freed, the allocator may have
    returned their memory to the system, and the next large allocation
    pays for fresh pages (up to several ms per call here).
    """
    for run in runners.values():
        for _ in range(warmup):
            run(*args)
    samples = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            samples[name].append(_harness.median_time(run, args, warmup=1, repeats=1))
    return {name: float(np.median(t)) for name, t in samples.items()}


def bench_layer(sizes, patch_sizes, repeats, compare_previous=False):
    """Layer vs naive (and optionally vs the previous fast path), per size.

    Besides the times and speedups, each row has `*_passes`: the layer's
    time in units of one elementwise multiply over its input, timed in the
    same run (`_harness.elementwise_pass_time`).
    """
    rows = []
    for shape in sizes:
        for p in patch_sizes:
            if shape[1] % p or shape[2] % p:
                continue  # 7x7 has no 2x2 tiling.
            rng = np.random.default_rng(0)
            x = _harness.to_backend(rng.normal(size=shape).astype("float32"))
            # The reference equations (no rescaling, the paper's weights), as
            # the naive implementation computes them.
            layer = keras_ersm.EnergyMask.paper(patch_size=p)
            layer.build(shape)
            kernel = _harness.to_backend(
                rng.normal(size=layer.kernel.shape).astype("float32") * 0.05
            )
            bias = _harness.to_backend(np.float32(0.0))
            fast, naive = _layer_fn(layer), _naive_fn(p)
            ref_value = float(ops.convert_to_numpy(naive(x, kernel, bias)))
            fast_value = float(ops.convert_to_numpy(fast(x, kernel, bias)))
            # Under a mixed policy the layer's output is in the compute dtype.
            exact = keras.config.dtype_policy().compute_dtype == "float32"
            rtol = 1e-4 if exact else 5e-2
            if not np.isclose(ref_value, fast_value, rtol=rtol, atol=1e-5):
                raise AssertionError(
                    f"mismatch {shape} p={p}: {fast_value} vs {ref_value}"
                )
            row = {"shape": list(shape), "patch_size": p}
            t_pass = _harness.elementwise_pass_time(x, repeats=repeats)
            row["pass_ms"] = round(t_pass * 1e3, 3)
            for mode, grad in (("forward", False), ("forward_backward", True)):
                runners = {
                    "fast": _harness.compile_fn(fast, grad=grad),
                    "naive": _harness.compile_fn(naive, grad=grad),
                }
                if compare_previous:
                    runners["previous"] = _harness.compile_fn(
                        _with_previous_ops(fast), grad=grad
                    )
                times = _interleaved_medians(runners, (x, kernel, bias), repeats)
                t_fast, t_naive = times["fast"], times["naive"]
                row[f"{mode}_ms"] = round(t_fast * 1e3, 3)
                row[f"{mode}_naive_ms"] = round(t_naive * 1e3, 3)
                row[f"{mode}_speedup"] = round(t_naive / t_fast, 2)
                row[f"{mode}_passes"] = round(t_fast / t_pass, 1)
                if compare_previous:
                    t_prev = times["previous"]
                    row[f"{mode}_previous_ms"] = round(t_prev * 1e3, 3)
                    row[f"{mode}_previous_speedup"] = round(t_naive / t_prev, 2)
            rows.append(row)
            print(row, flush=True)
    return rows


def _backbone(name, image_size):
    constructors = {
        "resnet50": keras.applications.ResNet50,
        "mobilenetv2": keras.applications.MobileNetV2,
    }
    return constructors[name](
        include_top=False, weights=None, input_shape=(image_size, image_size, 3)
    )


def bench_overhead(backbone, image_size, batch_size, repeats):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size, image_size, image_size, 3)).astype("float32")
    y = rng.integers(0, 10, size=(batch_size,))
    times = {}
    models = {}
    for variant, mask_at in (("baseline", None), ("energy_mask", "output")):
        keras.utils.set_random_seed(0)
        model = keras_ersm.models.build_classifier(
            _backbone(backbone, image_size), 10, mask_at=mask_at, freeze_backbone=False
        )
        model.compile(
            optimizer="sgd",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=_harness.BACKEND != "torch",
        )
        model.train_on_batch(x, y)  # Build and compile.
        models[variant] = model
    # Interleave the two variants so that machine noise hits both alike.
    samples = {k: [] for k in models}
    for _ in range(repeats):
        for variant, model in models.items():
            samples[variant].append(
                _harness.median_time(model.train_on_batch, (x, y), warmup=1, repeats=1)
            )
    for variant in models:
        times[variant] = float(np.median(samples[variant]))
    mask = keras_ersm.models.energy_mask_layers(models["energy_mask"])[0]
    features = mask.input.shape
    return {
        "backbone": backbone,
        "image_size": image_size,
        "batch_size": batch_size,
        "feature_map": list(features[1:]),
        "step_ms_baseline": round(times["baseline"] * 1e3, 2),
        "step_ms_energy_mask": round(times["energy_mask"] * 1e3, 2),
        "overhead_percent": round(
            100 * (times["energy_mask"] / times["baseline"] - 1), 2
        ),
        "dtype_policy": keras.config.dtype_policy().name,
    }


def bench_memory(channels=256, batch=8, grids=(7, 14, 28, 56)):
    if _harness.BACKEND != "jax":
        return {"skipped": "memory analysis needs the JAX backend (XLA)"}
    import jax

    rows = []
    for g in grids:
        layer = keras_ersm.EnergyMask()
        shape = (batch, g, g, channels)
        layer.build(shape)
        fn = jax.value_and_grad(_layer_fn(layer), argnums=(0, 1, 2))
        args = (
            jax.ShapeDtypeStruct(shape, "float32"),
            jax.ShapeDtypeStruct(tuple(layer.kernel.shape), "float32"),
            jax.ShapeDtypeStruct((), "float32"),
        )
        analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
        tokens = batch * g * g
        rows.append(
            {
                "shape": list(shape),
                "tokens": tokens,
                "temp_bytes": int(analysis.temp_size_in_bytes),
                "input_bytes": int(np.prod(shape) * 4),
                "temp_bytes_per_input_byte": round(
                    analysis.temp_size_in_bytes / (np.prod(shape) * 4), 3
                ),
            }
        )
        print(rows[-1], flush=True)
    return {"rows": rows}


def to_markdown(report):
    lines = [f"# Speed benchmark ({report['machine']['backend']})", ""]
    m = report["machine"]
    lines.append(
        f"Machine: {m['processor']}, {m['cpu_count']} cores, {m['device']}; "
        f"keras {m['keras']}; {report.get('threads', '?')} thread(s). "
        f"Command: `{report['command']}`"
    )
    if "layer" in report:
        lines += [
            "",
            "## EnergyMask vs naive (eight shifted copies, unfold/fold)",
            "",
            "Passes: the layer's time over one elementwise multiply of its input "
            "(same run). Previous: the fast path before issue 17, same run. Times: "
            "medians of calls interleaved between the implementations, each "
            "timed call right after an untimed one of the same implementation.",
            "",
            "| shape | p | fwd ms | naive fwd ms | fwd speedup | fwd passes "
            "| fwd+bwd ms | naive fwd+bwd ms | fwd+bwd speedup | fwd+bwd passes "
            "| previous fwd / fwd+bwd speedup |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report["layer"]:
            previous = (
                f"{r['forward_previous_speedup']}x / "
                f"{r['forward_backward_previous_speedup']}x"
                if "forward_previous_speedup" in r
                else ""
            )
            lines.append(
                f"| {tuple(r['shape'])} | {r['patch_size']} | {r['forward_ms']} | "
                f"{r['forward_naive_ms']} | {r['forward_speedup']}x | "
                f"{r.get('forward_passes', '')} | "
                f"{r['forward_backward_ms']} | {r['forward_backward_naive_ms']} | "
                f"{r['forward_backward_speedup']}x | "
                f"{r.get('forward_backward_passes', '')} | {previous} |"
            )
    if "overhead" in report:
        r = report["overhead"]
        lines += [
            "",
            "## Training-step overhead of one EnergyMask",
            "",
            "| backbone | input | batch | feature map | baseline ms | with mask ms "
            "| overhead |",
            "|---|---|---|---|---|---|---|",
            f"| {r['backbone']} | {r['image_size']} | {r['batch_size']} | "
            f"{tuple(r['feature_map'])} | {r['step_ms_baseline']} | "
            f"{r['step_ms_energy_mask']} | {r['overhead_percent']}% |",
        ]
    if "memory" in report and "rows" in report["memory"]:
        lines += [
            "",
            "## Forward+backward temporary memory (XLA memory analysis)",
            "",
            "| shape | tokens | temp MB | temp / input bytes |",
            "|---|---|---|---|",
        ]
        for r in report["memory"]["rows"]:
            lines.append(
                f"| {tuple(r['shape'])} | {r['tokens']} | "
                f"{r['temp_bytes'] / 2**20:.2f} | {r['temp_bytes_per_input_byte']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["layer", "overhead", "memory"],
        choices=["layer", "overhead", "memory"],
    )
    parser.add_argument("--quick", action="store_true", help="one size, fewer repeats")
    parser.add_argument("--patch-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--backbone", default="resnet50", choices=["resnet50", "mobilenetv2"]
    )
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype-policy", default=None, help="e.g. mixed_bfloat16")
    parser.add_argument("--output", default=None, help="JSON path")
    parser.add_argument(
        "--shapes",
        default=None,
        help="layer sizes, e.g. '32,7,7,2048;16,28,28,256' (default: all)",
    )
    parser.add_argument(
        "--compare-previous",
        action="store_true",
        help="also time the layer with the fast path before issue 17",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: stable on a shared machine)",
    )
    args = parser.parse_args(argv)
    _harness.set_threads(args.threads)
    if args.dtype_policy:
        keras.config.set_dtype_policy(args.dtype_policy)
    import sys

    report = {
        "machine": _harness.machine(),
        "command": f"KERAS_BACKEND={_harness.BACKEND} python -m benchmarks.speed "
        + shlex.join(sys.argv[1:] if argv is None else argv),
    }
    report["threads"] = _harness.threads()
    sizes = SIZES[:1] if args.quick else SIZES
    if args.shapes:
        sizes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")]
    repeats = 3 if args.quick else args.repeats
    if "layer" in args.sections:
        report["layer"] = bench_layer(
            sizes, args.patch_sizes, repeats, args.compare_previous
        )
    if "overhead" in args.sections:
        report["overhead"] = bench_overhead(
            args.backbone, args.image_size, args.batch_size, repeats
        )
        print(report["overhead"], flush=True)
    if "memory" in args.sections:
        report["memory"] = bench_memory()
    output = args.output or os.path.join(RESULTS, f"speed_{_harness.BACKEND}.json")
    _harness.write_json(output, report)
    with open(output[: -len(".json")] + ".md", "w") as f:
        f.write(to_markdown(report))
    print(to_markdown(report))


if __name__ == "__main__":
    main()
