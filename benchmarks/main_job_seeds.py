"""The main job over seeds, with the default energy and the previous one.

Runs `examples/train_cifar.py` (the offline default: the bundled
cluttered benchmark) once per seed and energy setting, in this process,
and collects each run's ERSM and baseline numbers from its `report.json`:
clean accuracy, mean keep, and the mass inside the object and pointing
game of the keep map, of Grad-CAM of the ERSM model and of Grad-CAM of the
baseline. `reference_energy` is the main job with
`EnergyMask(energy_score_gradient=1.0)`, the default before the energy
became a price per token (docs/concepts.md). Read on the Benchmarks page
("The main job").

    KERAS_BACKEND=jax python -m benchmarks.main_job_seeds --seeds 0 1 2

Writes `benchmarks/results/main_job_seeds_<backend>.json` (or `--output`).
"""

import argparse
import json
import os
import runpy
import sys

import keras

import keras_ersm
from benchmarks import trainability

RESULTS = os.path.join(os.path.dirname(__file__), "results")
SCRIPT = os.path.join(os.path.dirname(__file__), "..", "examples", "train_cifar.py")
# `reference_energy` pins the Glorot-uniform scoring kernel it was measured
# with; `default` in results/main_job_seeds_jax.json (session 6) also had
# it (the default until session 9, docs/changelog.md).
ENERGIES = {
    "default": {},
    "reference_energy": {
        "energy_score_gradient": 1.0,
        "kernel_initializer": "glorot_uniform",
    },
    # The magnitude prior with the keep starting at sigmoid(-1) = 0.27
    # (the trainability variant of the same name, session 11).
    "norm_init_neg1_bias1": trainability.VARIANTS["norm_init_neg1_bias1"],
}


def run(seed, energy, output_dir):
    """One main-job run; returns its report's `results`."""
    build = keras_ersm.models.build_classifier

    def patched(*args, **kwargs):
        if kwargs.get("mask_at"):
            kwargs = {**kwargs, **ENERGIES[energy]}
        return build(*args, **kwargs)

    keras_ersm.models.build_classifier = patched
    argv = sys.argv
    sys.argv = [SCRIPT, "--seed", str(seed), "--output-dir", output_dir]
    try:
        runpy.run_path(SCRIPT, run_name="__main__")
    except SystemExit as exit:
        # The script ends with `sys.exit(main())`: a clean exit must not
        # end this process after its first run (it did until session 11).
        if exit.code not in (0, None):
            raise
    finally:
        sys.argv = argv
        keras_ersm.models.build_classifier = build
    with open(os.path.join(output_dir, "report.json")) as f:
        return json.load(f)["results"]


def summary(results):
    ersm, base = results["ersm"], results["baseline"]
    scores = ersm["localization"]["scores"]
    out = {
        "ersm_accuracy": ersm["clean_accuracy"],
        "baseline_accuracy": base["clean_accuracy"],
        "mean_keep": ersm["mask_statistics"]["mean_keep"],
    }
    for name, found in (
        ("keep", scores["keep"]),
        ("grad_cam_ersm", scores["grad_cam"]),
        ("grad_cam_baseline", base["localization"]["scores"]["grad_cam"]),
    ):
        out[f"{name}_mass_inside"] = found["mass_inside"]
        out[f"{name}_pointing_game"] = found["pointing_game"]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--energies", nargs="+", default=list(ENERGIES), choices=list(ENERGIES)
    )
    parser.add_argument("--work-dir", default="runs/main_job_seeds")
    parser.add_argument(
        "--output",
        default=None,
        help="JSON file to write (default: results/main_job_seeds_<backend>.json)",
    )
    args = parser.parse_args(argv)
    rows = []
    for energy in args.energies:
        for seed in args.seeds:
            out = os.path.join(args.work_dir, f"{energy}_seed{seed}")
            rows.append(
                {"energy": energy, "seed": seed, **summary(run(seed, energy, out))}
            )
            print(json.dumps(rows[-1]), flush=True)
    backend = keras.backend.backend()
    path = args.output or os.path.join(RESULTS, f"main_job_seeds_{backend}.json")
    with open(path, "w") as f:
        json.dump(
            {
                "command": f"KERAS_BACKEND={backend} python -m "
                "benchmarks.main_job_seeds " + " ".join(argv or sys.argv[1:]),
                "runs": rows,
            },
            f,
            indent=2,
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
