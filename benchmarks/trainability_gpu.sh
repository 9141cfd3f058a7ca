#!/usr/bin/env bash
# A slice of the trainability matrix trained longer, as parallel processes on
# one GPU (session 12, an H100 lent for 15 minutes; docs/benchmarks.md,
# "Trainability").
#
# The cells that the default failed at 12 epochs are cells where the baseline
# itself did not learn reliably: at chance on some seeds, or its reseeded
# copy (`baseline_shifted`) failing the same verdict. On the plain CNN both
# sit on a plateau (loss ln 15, most features zero) for about 14 epochs;
# trained for EPOCHS epochs the baseline leaves chance on every seed. Each
# job is one (backbone, optimizer, dataset, seed or two seeds) of
# `benchmarks/trainability.py` (`--epochs EPOCHS` for every dataset, the
# bundled one too), all appending to one JSONL file
# (`benchmarks/results/trainability_$TAG_jax.jsonl`; a rerun skips the runs
# already there). Jobs run in priority order, JOBS at a time, for at most
# LIMIT seconds.
# Each run trains on the protocol's images for its backbone (since session
# 14, 10000 for MobileNetV3Small on the harder data: `PROTOCOL`).
#
# Usage (on the GPU machine, from the repository root; session 12 ran
# round1 with LIMIT=420, then round2 and seed8 side by side with LIMIT=200,
# seed8 with JOBS=1):
#     JOBSET=round1 bash benchmarks/trainability_gpu.sh
#     JOBSET=mobilenet10k TAG=gpu_protocol JOBS=6 LIMIT=520 bash benchmarks/trainability_gpu.sh
#     JOBSET=control TAG=h200_protocol JOBS=6 LIMIT=520 bash benchmarks/trainability_gpu.sh
#     KERAS_BACKEND=jax python -m benchmarks.trainability --tag h100_e30 --summarize
# On the device machine, first install the carried wheels (keras, namex,
# optree; session 15) and run from the repository root; the script sets
# KERAS_BACKEND=jax itself. Copy the JSONL to $OUT afterwards.
set -u
TAG=${TAG:-h100_e30}
EPOCHS=${EPOCHS:-30}
JOBS=${JOBS:-14}
LIMIT=${LIMIT:-420}
LOG=${LOG:-/tmp/trainability_gpu.log}
PYTHON=${PYTHON:-python3}
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=0.05

# Job sets, in the order they ran in session 12 (two calls, 14 jobs at a
# time): `round1` (its MobileNetV3Small jobs did not finish in 420 s: 14
# processes time-slice one GPU), `round2` (seeds 9-17) and `seed8` (other
# variants on the one seed where the default stayed near chance).
jobs_round1() {
    for seed in 0 1 2 3 4 5 6 7 8; do
        for opt in adam adamw; do echo "plain_cnn $opt hard $seed"; done
    done
    for seed in 0 1 2 3 4 5; do
        for opt in adam adamw; do echo "mobilenet_v3_small $opt hard $seed"; done
    done
    for seed in 0 1 2; do echo "mobilenet_v3_small sgd_0.01 cluttered $seed"; done
    for seed in 0 1 2 3 4 5; do echo "mobilenet_v3_small sgd cluttered $seed"; done
}
jobs_round2() {
    for seed in 9 10 11 12 13 14 15 16 17; do
        for opt in adam adamw; do echo "plain_cnn $opt hard $seed"; done
    done
}
jobs_seed8() { echo "plain_cnn adam hard 8"; }
# Session 14: the protocol's MobileNetV3Small cells on the harder data (10000
# images, `PROTOCOL` in benchmarks/trainability.py). About 17 minutes a run
# on 2 CPU cores; run with TAG=gpu_protocol. The six jobs the CPU file
# lacked at the end of session 14 come first (SGD 0.01 seeds 0-2, AdamW
# seeds 1-2, Adam seed 0), then the three it has, so that a run stopped at
# LIMIT still fills the CPU file's gaps.
jobs_mobilenet10k() {
    for seed in 0 1 2; do echo "mobilenet_v3_small sgd_0.01 hard $seed"; done
    for seed in 1 2; do echo "mobilenet_v3_small adamw hard $seed"; done
    for seed in 0 1 2; do echo "mobilenet_v3_small adam hard $seed"; done
    echo "mobilenet_v3_small adamw hard 0"
}
# Session 15 ran `mobilenet10k` on an H200 (TAG=h200_protocol after
# merging; 6 jobs at a time: all 12 runs of the first 6 jobs ended within
# 400 s of the start, the first of each job after ~280 s): the default fell
# 23 points behind on Adam seed 0. `control` adds, in the same cells, the init-matched default and
# the shifted baseline (whose head starts as the default's), and the runs
# `mobilenet10k` did not finish. With TAG=h200_protocol the runs already in
# `benchmarks/results/trainability_h200_protocol_jax.jsonl` are skipped (on
# another GPU use another TAG: every run then trains, baselines too):
#     JOBSET=control TAG=h200_protocol JOBS=6 LIMIT=520 bash benchmarks/trainability_gpu.sh
jobs_control() {
    for seed in 0 1 2; do echo "mobilenet_v3_small adam hard $seed"; done
    for seed in 0 1 2; do echo "mobilenet_v3_small adamw hard $seed"; done
    for seed in 0 1 2; do echo "mobilenet_v3_small sgd_0.01 hard $seed"; done
}
# `plateau`: how long MobileNetV3Small's first plateau lasts (its test
# accuracy after 12 epochs), twelve seeds, the baseline against the
# init-matched default and the same without the energy's gradient on the
# scoring kernel (session 15's CPU probes: docs/benchmarks.md, "Session 15"):
#     JOBSET=plateau TAG=h200_plateau_e12 EPOCHS=12 JOBS=6 LIMIT=520 bash benchmarks/trainability_gpu.sh
jobs_plateau() {
    for seed in 0 2 4 6 8 10; do echo "mobilenet_v3_small adam hard $seed $((seed + 1))"; done
}

JOBSET=${JOBSET:-round1}
case "$JOBSET" in
    round1 | round2) VARIANTS=${VARIANTS:-baseline_shifted default norm_init_neg1_bias1} ;;
    seed8) VARIANTS=${VARIANTS:-no_energy kernel_stop default_norm_score price_kernel_stop score_stop norm_init_neg1} ;;
    mobilenet10k) VARIANTS=${VARIANTS:-default} ;;
    control) VARIANTS=${VARIANTS:-default default_matched baseline_shifted} ;;
    plateau) VARIANTS=${VARIANTS:-default_matched price_kernel_stop_matched} ;;
    *) echo "Unknown JOBSET=$JOBSET (expected round1, round2, seed8, mobilenet10k, control or plateau)" >&2; exit 2 ;;
esac
export TAG EPOCHS LOG VARIANTS PYTHON
"jobs_$JOBSET" | timeout "$LIMIT" xargs -P "$JOBS" -L 1 bash -c '
    "$PYTHON" -m benchmarks.trainability --backbones "$0" --optimizers "$1" \
        --datasets "$2" --seeds $3 ${4:-} --epochs "$EPOCHS" --tag "$TAG" \
        --variants $VARIANTS \
        2>&1 | grep --line-buffered "^\[" >> "$LOG"'
echo "trainability_gpu: done or stopped after at most ${LIMIT}s; $(wc -l < "$LOG") runs logged"
