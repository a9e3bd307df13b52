#!/usr/bin/env bash
# GPU check for mtf-faces, one script, at most ~8 minutes, no network needed.
#
# Run on a GPU machine that has torch (a CUDA build) in its Python, from the
# repository root:
#
#     bash benchmarks/gpu_check.sh [LOG]            # default LOG: gpu_check-<date>.log
#
# Optional environment:
#   PYTHON=python3          interpreter to use (default: python)
#   WHEELS=/path/to/wheels  folder of pure-Python wheels (torch-fidelity, click, ...)
#                           installed with --no-index before the package
#   MTF_EXTENSIONS_DIR      extension cache (default: ./.mtf-ext-cache)
#
# Steps (each has its own time limit; a failed step is logged and the rest still run):
#   1. install the package with --no-deps (and $WHEELS, if given)
#   2. mtf-gan doctor: toolchain, cpp and cuda builds, parity self-tests
#   3. the cuda parity tests (pytest -m cuda: fp32 and fp16 values, fp64 gradients)
#   4. the ops benchmark on the GPU (ref vs cuda, fp32 and fp16) and on the CPU
#   5. a few ticks of the mtf256 preset on synthetic data (2 kimg, conditional, ADA fixed p=0.3)
#   6. the FID feature-extraction rate (benchmarks/fid_speed.py; needs torch-fidelity)
# Everything goes to one log; the last lines summarise the status of each step.

set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
LOG=${1:-gpu_check-$(date -u +%Y%m%d-%H%M%S).log}
export MTF_EXTENSIONS_DIR=${MTF_EXTENSIONS_DIR:-$PWD/.mtf-ext-cache}
source benchmarks/_steps.sh  # step, skip, SUMMARY

main() {
    echo "gpu_check: $(date -u) host=$(hostname) git=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "nvidia-smi not available"
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())"

    if [ -n "${WHEELS:-}" ]; then
        step wheels 120 $PY -m pip install --no-index --find-links "$WHEELS" "$WHEELS"/*.whl
    fi
    step install 120 $PY -m pip install --no-deps --no-build-isolation -e .
    step doctor 300 $PY -c "from gan.cli import main; main()" doctor
    step cuda-tests 180 $PY -m pytest -q -m cuda tests/gan/test_ops.py -p no:cacheprovider
    step bench-cuda 90 $PY benchmarks/ops.py --device cuda --res 64 128 --batch 8 --reps 10
    step bench-cpu 90 $PY benchmarks/ops.py --device cpu --res 64 --batch 4 --reps 3

    # A few ticks of the mtf256 preset on synthetic 256-px faces (sec/kimg and memory are
    # in the tick lines). ADA runs with a fixed p=0.3 so that R1 goes through the
    # augmentations from the first step (torch 2.11's CUDA grid_sample had no double backward).
    local tmp
    tmp=$(mktemp -d)
    step train-ticks 240 bash -c "
        set -e
        mtf() { $PY -c 'from gan.cli import main; main()' \"\$@\"; }
        mtf synth --out $tmp/faces --layout noncurated --people 16 --per-person 8 --resolution 256 --no-progress
        mtf prepare $tmp/faces $tmp/faces.zip -r 256 --labels $tmp/faces/attributes.csv --label-column gender -j 8 --no-progress
        mtf train --data $tmp/faces.zip --outdir $tmp/runs --config configs/gan/mtf256.yaml --cond --mirror \
            --kimg 2 --set augment.mode=fixed --set augment.p=0.3 --set train.tick_kimg=0.5 --set train.snap_kimg=2 \
            --no-progress
        nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv || true"
    if $PY -c "import torch_fidelity" 2>/dev/null; then
        step fid-rate 150 $PY benchmarks/fid_speed.py --device cuda --n-real 2000 --n-fake 1000 --batch 128
    else
        skip fid-rate "torch-fidelity not installed (pass WHEELS=... with its wheel)"
    fi

    echo
    echo "=== summary ($(date -u +%H:%M:%S), ${SECONDS}s total)"
    printf '%s\n' "${SUMMARY[@]}"
}

main 2>&1 | tee "$LOG"
echo "log: $LOG"
