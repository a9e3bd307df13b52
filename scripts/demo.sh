#!/usr/bin/env bash
# The demo behind `make demo`: the package's pipeline on built-in synthetic MTF faces,
# using only the public commands a researcher would type. Budget: 10 minutes on 2 CPU
# cores (data 1 min, GAN 5, FID 1, classifiers 2, scoring 1); the stages that have
# landed so far run here, each later issue adds its own.
#
# Usage: scripts/demo.sh [OUT_ROOT]   (default demo-out). Every run gets a new numbered
# folder OUT_ROOT/NNNNN, so nothing from an earlier run is overwritten.
set -euo pipefail

root=${1:-demo-out}
mkdir -p "$root"
n=0
while [ -e "$(printf '%s/%05d' "$root" "$n")" ]; do n=$((n + 1)); done
run=$(printf '%s/%05d' "$root" "$n")
mkdir -p "$run"
export MPLBACKEND=Agg
here=$(cd "$(dirname "$0")" && pwd)
t0=$(date +%s)
stage() { echo; echo "== [$(( $(date +%s) - t0 )) s] $*"; }

stage "1/6 synthetic non-curated MTF tree (people/*.jpg + attributes.csv)"
mtf-gan synth --out "$run/mtf-noncurated" --layout noncurated \
    --people 32 --per-person 24 --resolution 64 --seed 0 --no-progress

stage "2/6 synthetic curated MTF trees (<task>/{train,val,test}/<class>/*.png)"
mtf-gan synth --out "$run/mtf-curated" --layout curated \
    --people 24 --per-person 10 --resolution 64 --seed 1 --no-progress

stage "3/6 prepare the non-curated tree as a 32x32 training archive, labelled by gender"
mtf-gan prepare "$run/mtf-noncurated" "$run/mtf-noncurated-32.zip" --resolution 32 \
    --labels "$run/mtf-noncurated/attributes.csv" --label-column gender --workers 2 --no-progress

stage "4/6 train the demo GAN preset, conditional on gender (CPU, about ${DEMO_KIMG:=8} kimg)"
mtf-gan train --data "$run/mtf-noncurated-32.zip" --outdir "$run/gan" \
    --config "$here/../configs/gan/demo.yaml" --cond --kimg "$DEMO_KIMG" --no-progress
gan_run=$(ls -d "$run"/gan/00000-*)
ckpt=$(ls "$gan_run"/checkpoint-*.pt | sort | tail -n 1)

stage "5/6 generate one grid per class from the EMA generator"
for cls in Female Male; do
    mtf-gan generate --network "$ckpt" --seeds 0-35 --class "$cls" --grid --outdir "$run/generated/$cls"
done

stage "6/6 demo classifiers (tiny CNN) for gender, race and age on the curated tree"
mtf-classify baselines --data "$run/mtf-curated" --outdir "$run/classify" --models tiny_cnn \
    --tasks gender,race,age --recipe demo --cache-dir "$run/classify-cache" --no-progress --threads 1

stage "done in $(( $(date +%s) - t0 )) s. Everything is under $run:"
echo "  $run/mtf-noncurated/          synthetic non-curated tree + attributes.csv"
echo "  $run/mtf-curated/             synthetic curated trees (face_recognition, race, gender, age)"
echo "  $run/mtf-noncurated-32.zip    training archive (PNGs + dataset.json, sizes.json)"
echo "  $gan_run/   GAN run: config.yaml, log.txt, stats.jsonl, TensorBoard events, fakes-*.png, checkpoint-*.pt"
echo "  $run/generated/{Female,Male}/grid.png   generated faces per class"
echo "  $run/classify/                classifier runs + results.md (test accuracy per task)"
echo "TensorBoard: tensorboard --logdir $run/gan"
