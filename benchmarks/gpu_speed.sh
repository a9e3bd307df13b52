#!/usr/bin/env bash
# Issue 15's GPU check (training speed against the published code): one script, about 7-8 minutes
# on an H200 (the first CUDA build of ours and of the published plugins included).
#
#     bash benchmarks/gpu_speed.sh [LOG]          # default LOG: gpu_speed-<date>.log
#
# Needs the published StyleGAN2-ADA's torch_utils, dnnlib and training folders in .cache/sg2a
# (see benchmarks/vs_stylegan2ada.py; with the device tool, carry ".cache/sg2a"), and torch
# with CUDA in $PYTHON (default: python). Steps, each with its own time limit (a failed step
# is logged and the rest still run):
#   0. (background, from the start) build the published plugins, so the side-by-side run
#      times training, not nvcc
#   1. install the package with --no-deps (editable), if it is not importable
#   2. mtf-gan doctor --target cuda: our cuda build and its self-tests
#   3. the CUDA parity tests of the per-pixel kernels and bias_act (pytest -m cuda): values and
#      first- and second-order gradients, fp32 and fp16
#   4. the tiled upfirdn2d kernel: compute-sanitizer memcheck on its StyleGAN passes (when the
#      tool is there), then its parity tests, in processes of their own; when they pass, the
#      training measurements below run with MTF_OPS_CUDA_TILED=1, else with the per-pixel kernel
#   5. benchmarks/train_speed.py at 256 px, batch 16, ADA fixed p = 0.3: top-level operators,
#      kernel launches, kernel time against wall time per phase, and the syncs of 16
#      steady-state steps
#   6. benchmarks/vs_stylegan2ada.py --device cuda: ours -> theirs -> ours, 256 px, batch 16,
#      p = 0.3, 2 warm-up ticks dropped, 2 measured ticks of 1 kimg per run
#   7. benchmarks/ops.py on the GPU: ref, per-pixel and tiled upfirdn2d (G outputs/s)
# The last lines summarise each step; the vs_sg2a, train_speed_counts and train_speed_syncs
# lines are what goes to benchmarks/RESULTS.md.

set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
LOG=${1:-gpu_speed-$(date -u +%Y%m%d-%H%M%S).log}
export MTF_EXTENSIONS_DIR=${MTF_EXTENSIONS_DIR:-$PWD/.mtf-ext-cache}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.cache/sg2a-extensions}
source benchmarks/_steps.sh  # step, skip, SUMMARY

main() {
    echo "gpu_speed: $(date -u) host=$(hostname) git=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "nvidia-smi not available"
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())"
    [ -d .cache/sg2a/training ] || echo "WARNING: .cache/sg2a is missing: the side-by-side step will fail"

    local tmp
    tmp=$(mktemp -d)
    timeout 300 $PY -c "
import sys; from pathlib import Path; sys.path.insert(0, 'benchmarks')
import vs_stylegan2ada as v
v.import_published(Path('.cache/sg2a'), gpu=True)
print('published plugins:', v.published_kernels_ok())" > "$tmp/sg2a-build.log" 2>&1 &
    local build_pid=$!

    $PY -c "import gan" 2>/dev/null || step install 120 $PY -m pip install --no-deps --no-build-isolation -e .
    step doctor 200 $PY -c "from gan.cli import main; main()" doctor --target cuda
    # The per-pixel kernels first, then the never-run tiled kernel in its own processes: a fault
    # there (a broken CUDA context) must not take the other results with it.
    step cuda-tests 150 $PY -m pytest -q -x -m cuda tests/gan/test_ops.py -k "not tiled" -p no:cacheprovider
    local kernel=0
    if command -v compute-sanitizer >/dev/null; then
        step sanitizer 90 compute-sanitizer --tool memcheck --error-exitcode 9 $PY -m pytest -q -x -m cuda \
            tests/gan/test_ops.py -k "tiled and stylegan" -p no:cacheprovider
    fi
    step tiled-tests 150 $PY -m pytest -q -m cuda tests/gan/test_ops.py -k tiled -p no:cacheprovider && kernel=1
    echo "=== upfirdn2d kernel for the training measurements: MTF_OPS_CUDA_TILED=$kernel"
    export MTF_OPS_CUDA_TILED=$kernel
    step counts 90 $PY benchmarks/train_speed.py --device cuda --res 256 --batch 16 --augment-p 0.3 --counts --syncs
    echo
    echo "=== waiting for the published plugins' build ($(date -u +%H:%M:%S))"
    wait $build_pid
    cat "$tmp/sg2a-build.log"
    step vs-sg2a 300 $PY benchmarks/vs_stylegan2ada.py --sg2a .cache/sg2a --device cuda --ticks 2 --warmup-ticks 2
    step ops-bench 60 $PY benchmarks/ops.py --device cuda --res 128 --batch 8 --reps 5
    echo
    echo "=== summary ($(date -u +%H:%M:%S), ${SECONDS}s total)"
    printf '%s\n' "${SUMMARY[@]}"
}

main 2>&1 | tee "$LOG"
echo "log: $LOG"
