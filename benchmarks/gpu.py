"""GPU benchmark of EnergyMask in one command (issue 17).

Measures, for each backend (each in its own subprocess):

1. `layer`: EnergyMask forward and forward+backward against the naive
   statement of the equations (`benchmarks/naive.py`), side by side, at
   (64, 7, 7, 2048), (64, 14, 14, 1024) and (32, 56, 56, 256), p = 1, for
   each dtype policy (float32 and mixed_bfloat16 by default), with the
   elementwise passes per call (`benchmarks/speed.py`'s `bench_layer`).
2. `overhead`: one training step of `keras.applications.ResNet50(
   weights=None)` at 224 px, batch 64, mixed precision, jit where the
   backend jits, with one EnergyMask on its last feature map against the
   same model without it, steps interleaved (`speed.bench_overhead`).
   Target: at most 2%.
3. `deletion`: a full deletion curve (energy, magnitude and random orders)
   of that ResNet50 classifier against one `model.evaluate` pass over the
   same images.

Usage (one H100: about 8 minutes for the three backends):

    python -m benchmarks.gpu                       # -> benchmarks/results/gpu.{json,md}
    python -m benchmarks.gpu --backends jax        # one backend
    python -m benchmarks.gpu --smoke --output /tmp/gpu_smoke.json   # CPU, tiny

`--smoke` runs the same code at tiny sizes (a small CNN backbone instead of
ResNet50) so that the script is exercised by the test suite on CPU
(`benchmarks/gpu_test.py`).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

RESULTS = os.path.join(os.path.dirname(__file__), "results")
BACKENDS = ("jax", "tensorflow", "torch")

FULL = {
    "layer_sizes": [(64, 7, 7, 2048), (64, 14, 14, 1024), (32, 56, 56, 256)],
    "repeats": 10,
    "backbone": "resnet50",
    "image_size": 224,
    "batch_size": 64,
    "step_repeats": 10,
    "deletion_images": 512,
}
SMOKE = {
    "layer_sizes": [(2, 4, 4, 16), (2, 8, 8, 8)],
    "repeats": 2,
    "backbone": "tiny",
    "image_size": 32,
    "batch_size": 4,
    "step_repeats": 2,
    "deletion_images": 8,
}


def _tiny_backbone(image_size):
    import keras

    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(inputs, x)


def _classifier(backbone, image_size):
    import keras

    import keras_ersm

    if backbone == "tiny":
        features = _tiny_backbone(image_size)
    else:
        features = keras.applications.ResNet50(
            include_top=False, weights=None, input_shape=(image_size, image_size, 3)
        )
    return keras_ersm.models.build_classifier(
        features, 10, mask_at="output", freeze_backbone=False
    )


def bench_overhead(config, repeats):
    """Training-step overhead of one EnergyMask (speed.bench_overhead)."""
    from benchmarks import speed

    if config["backbone"] == "tiny":
        original = speed._backbone
        speed._backbone = lambda name, size: _tiny_backbone(size)
        try:
            return speed.bench_overhead(
                "tiny", config["image_size"], config["batch_size"], repeats
            )
        finally:
            speed._backbone = original
    return speed.bench_overhead(
        config["backbone"], config["image_size"], config["batch_size"], repeats
    )


def bench_deletion(config):
    """One deletion curve (3 orders) against one `evaluate` pass."""
    import keras
    import numpy as np

    import keras_ersm

    keras.utils.set_random_seed(0)
    model = _classifier(config["backbone"], config["image_size"])
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(0)
    n, size = config["deletion_images"], config["image_size"]
    x = rng.random((n, size, size, 3), "float32")
    y = rng.integers(0, 10, n)
    batch = config["batch_size"]
    model.evaluate(x, y, batch_size=batch, verbose=0)  # Compile.
    start = time.perf_counter()
    model.evaluate(x, y, batch_size=batch, verbose=0)
    evaluate_s = time.perf_counter() - start
    orders = ("energy", "magnitude", "random")
    keras_ersm.evaluation.deletion_curve(
        model, (x[:batch], y[:batch]), orders=orders, batch_size=batch
    )  # Compile the split network.
    start = time.perf_counter()
    curve = keras_ersm.evaluation.deletion_curve(
        model, (x, y), orders=orders, batch_size=batch
    )
    deletion_s = time.perf_counter() - start
    return {
        "images": n,
        "image_size": size,
        "batch_size": batch,
        "orders": list(orders),
        "steps_per_order": len(curve.fractions),
        "evaluate_s": round(evaluate_s, 3),
        "deletion_curve_s": round(deletion_s, 3),
        "ratio": round(deletion_s / evaluate_s, 2),
    }


def run_backend(config, policies, sections):
    """All sections on the current backend (KERAS_BACKEND); returns a dict."""
    import keras

    from benchmarks import _harness, speed

    report = {"machine": _harness.machine(), "layer": {}}
    for policy in policies:
        keras.config.set_dtype_policy(policy)
        if "layer" in sections:
            report["layer"][policy] = speed.bench_layer(
                config["layer_sizes"], [1], config["repeats"]
            )
    mixed = next((p for p in policies if p.startswith("mixed")), policies[-1])
    keras.config.set_dtype_policy(mixed)
    if "overhead" in sections:
        report["overhead"] = bench_overhead(config, config["step_repeats"])
    if "deletion" in sections:
        report["deletion"] = bench_deletion(config)
        report["deletion"]["dtype_policy"] = mixed
    keras.config.set_dtype_policy("float32")
    return report


def to_markdown(report):
    lines = [
        "# GPU benchmark" + (" (smoke, CPU, tiny sizes)" if report["smoke"] else ""),
        "",
        f"Command: `{report['command']}`",
        "",
    ]
    for backend, result in report["backends"].items():
        if "error" in result:
            lines += [f"## {backend}", "", f"Failed: `{result['error']}`", ""]
            continue
        m = result["machine"]
        lines += [f"## {backend} ({m['device']}, keras {m['keras']})", ""]
        lines += [
            "| policy | shape | fwd speedup | fwd passes | fwd+bwd speedup "
            "| fwd+bwd passes | fwd ms | fwd+bwd ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for policy, rows in result["layer"].items():
            for r in rows:
                lines.append(
                    f"| {policy} | {tuple(r['shape'])} | {r['forward_speedup']}x | "
                    f"{r['forward_passes']} | {r['forward_backward_speedup']}x | "
                    f"{r['forward_backward_passes']} | {r['forward_ms']} | "
                    f"{r['forward_backward_ms']} |"
                )
        if "overhead" in result:
            o = result["overhead"]
            lines += [
                "",
                f"Training step, {o['backbone']} {o['image_size']} px, batch "
                f"{o['batch_size']}, {o['dtype_policy']}: {o['step_ms_baseline']} ms "
                f"without the mask, {o['step_ms_energy_mask']} ms with it: "
                f"overhead {o['overhead_percent']}% (target <= 2%).",
            ]
        if "deletion" in result:
            d = result["deletion"]
            lines += [
                "",
                f"Deletion curve ({len(d['orders'])} orders x {d['steps_per_order']} "
                f"steps, {d['images']} images): {d['deletion_curve_s']} s against "
                f"{d['evaluate_s']} s for one evaluate pass: {d['ratio']}x.",
            ]
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, CPU")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    parser.add_argument(
        "--policies",
        nargs="+",
        default=["float32", "mixed_bfloat16"],
        help="dtype policies of the layer section; the first mixed one is "
        "used for the training step and the deletion curve",
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["layer", "overhead", "deletion"],
        choices=["layer", "overhead", "deletion"],
    )
    parser.add_argument("--output", default=os.path.join(RESULTS, "gpu.json"))
    parser.add_argument("--timeout", type=int, default=420, help="seconds per backend")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = SMOKE if args.smoke else FULL

    if args.worker:  # One backend, in this process.
        result = run_backend(config, args.policies, args.sections)
        with open(args.worker, "w") as f:
            json.dump(result, f)
        return

    command = "python -m benchmarks.gpu " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    report = {"command": command, "smoke": args.smoke, "config": config, "backends": {}}
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    for backend in args.backends:
        part = os.path.abspath(args.output)[: -len(".json")] + f"_{backend}.part.json"
        worker = [
            sys.executable,
            "-m",
            "benchmarks.gpu",
            "--worker",
            part,
            "--policies",
            *args.policies,
            "--sections",
            *args.sections,
        ] + (["--smoke"] if args.smoke else [])
        env = dict(os.environ, KERAS_BACKEND=backend)
        if args.smoke:
            env.setdefault("CUDA_VISIBLE_DEVICES", "")
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                worker,
                env=env,
                cwd=os.path.dirname(os.path.dirname(__file__)),
                capture_output=True,
                text=True,
                timeout=args.timeout,
            )
            if proc.returncode:
                result = {"error": proc.stderr.strip().splitlines()[-1:] or "failed"}
            else:
                with open(part) as f:
                    result = json.load(f)
                os.remove(part)
        except subprocess.TimeoutExpired:
            result = {"error": f"timed out after {args.timeout} s"}
        result["wall_s"] = round(time.perf_counter() - start, 1)
        report["backends"][backend] = result
        print(f"[{backend}] {json.dumps(result)[:400]}", flush=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    with open(args.output[: -len(".json")] + ".md", "w") as f:
        f.write(to_markdown(report))
    print(to_markdown(report))
    if any("error" in r for r in report["backends"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
