"""Cost of a full deletion curve against one plain `model.evaluate` pass.

A small CNN maps 112x112 images to a 7x7 feature map, where an EnergyMask
sits before global average pooling and the classifier (the paper's
placement: the mask on the last feature map). The benchmark times

- one `model.evaluate` pass over the data (compiled, after a warm-up), and
- `keras_ersm.evaluation.deletion_curve` with three orders ("energy",
  "magnitude", "random") at full resolution (k = 0..49, 50 points each),
  after a warm-up,

and reports the ratio (target: at most 3x). The reference protocol re-runs
the whole network for every step: 3 x (N + 1) = 150 evaluate passes, whose
cost is reported as that multiple of the measured evaluate time. Results go
into one JSON file with an entry per backend (a run replaces its own
backend's entry).

Usage:

    KERAS_BACKEND=jax python benchmarks/deletion_cost.py \
        --output benchmarks/results/deletion_cost.json
"""

import argparse
import json
import os
import platform
import statistics
import time

import keras
import numpy as np

import keras_ersm


def build_model(image_size=112, num_classes=10, width=32):
    """A small VGG-like CNN with an EnergyMask on its 7x7 feature map."""
    inputs = keras.Input((image_size, image_size, 3))
    h = inputs
    for stage in range(4):  # 112 -> 56 -> 28 -> 14 -> 7
        filters = width * 2 ** min(stage, 2)
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(4 * width, 3, padding="same", activation="relu")(h)
    h = keras_ersm.EnergyMask(name="mask")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(num_classes)(h)
    model = keras.Model(inputs, outputs)
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def timed(fn, repeats):
    fn()  # Warm-up: compilation and caches.
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="benchmarks/results/deletion_cost.json")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    model = build_model(args.image_size)
    rng = np.random.default_rng(0)
    x = rng.random((args.images, args.image_size, args.image_size, 3), "float32")
    y = rng.integers(0, 10, args.images)
    orders = ("energy", "magnitude", "random")

    evaluate_s, evaluate_runs = timed(
        lambda: model.evaluate(x, y, batch_size=args.batch_size, verbose=0),
        args.repeats,
    )
    result = {}

    def deletion():
        result["curve"] = keras_ersm.evaluation.deletion_curve(
            model, (x, y), orders=orders, batch_size=args.batch_size
        )

    deletion_s, deletion_runs = timed(deletion, args.repeats)
    curve = result["curve"]
    steps = len(curve.fractions)
    payload = {
        "benchmark": "deletion_cost",
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "images": args.images,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "grid": [7, 7],
        "num_tokens": curve.num_tokens,
        "orders": list(orders),
        "steps_per_order": steps,
        "evaluate_seconds": evaluate_s,
        "deletion_curve_seconds": deletion_s,
        "ratio": deletion_s / evaluate_s,
        "target_ratio": 3.0,
        "reference_protocol_passes": len(orders) * steps,
        "reference_protocol_estimated_ratio": float(len(orders) * steps),
        "evaluate_runs": evaluate_runs,
        "deletion_curve_runs": deletion_runs,
        "auc": curve.auc,
    }
    # One entry per backend: runs on other backends are kept.
    report = {"benchmark": "deletion_cost", "results": {}}
    if os.path.exists(args.output):
        with open(args.output) as f:
            previous = json.load(f)
        report["results"].update(previous.get("results", {}))
    report["results"][payload["backend"]] = payload
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    print(
        f"[{payload['backend']}] evaluate {evaluate_s:.3f}s, deletion curve "
        f"({len(orders)} orders x {steps} steps) {deletion_s:.3f}s, ratio "
        f"{payload['ratio']:.2f}x (target <= 3x; reference protocol "
        f"{payload['reference_protocol_passes']} passes)"
    )


if __name__ == "__main__":
    main()
