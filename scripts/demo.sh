#!/usr/bin/env bash
# The demo behind `make demo`: the package's pipeline on built-in synthetic MTF faces,
# using only the public commands a researcher would type. Budget: 10 minutes on 2 CPU
# cores (data 1 min, GAN 5, FID 1, classifiers 2, scoring 1).
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

stage "1/8 synthetic non-curated MTF tree (people/*.jpg + attributes.csv)"
mtf-gan synth --out "$run/mtf-noncurated" --layout noncurated \
    --people 32 --per-person 24 --resolution 64 --seed 0 --no-progress

stage "2/8 synthetic curated MTF trees (<task>/{train,val,test}/<class>/*.png)"
mtf-gan synth --out "$run/mtf-curated" --layout curated \
    --people 24 --per-person 10 --resolution 64 --seed 1 --no-progress

stage "3/8 prepare the non-curated tree as a 32x32 training archive, labelled by gender"
mtf-gan prepare "$run/mtf-noncurated" "$run/mtf-noncurated-32.zip" --resolution 32 \
    --labels "$run/mtf-noncurated/attributes.csv" --label-column gender --workers 2 --no-progress

stage "4/8 train the demo GAN preset, conditional on gender (CPU, about ${DEMO_KIMG:=8} kimg)"
mtf-gan train --data "$run/mtf-noncurated-32.zip" --outdir "$run/gan" \
    --config "$here/../configs/gan/demo.yaml" --cond --kimg "$DEMO_KIMG" --no-progress
gan_run=$(ls -d "$run"/gan/00000-*)
ckpt=$(ls "$gan_run"/checkpoint-*.pt | sort | tail -n 1)

stage "5/8 generate one grid per class from the EMA generator"
for cls in Female Male; do
    mtf-gan generate --network "$ckpt" --seeds 0-35 --class "$cls" --grid --outdir "$run/generated/$cls"
done

stage "6/8 FID and KID of 200 generated faces against the training archive (torch-fidelity)"
# Exit status 2 means the Inception weights are not on this machine (never downloaded):
# the message above says where to put them; the demo goes on without FID.
fid_status=0
mtf-gan metrics --real "$run/mtf-noncurated-32.zip" --network "$ckpt" --num 200 --metrics fid,kid \
    --stats-cache "$run/fid-cache" || fid_status=$?
if [ "$fid_status" -eq 2 ]; then
    echo "FID skipped: Inception weights missing (see above for where to put them)"
elif [ "$fid_status" -ne 0 ]; then
    echo "demo: mtf-gan metrics failed (exit $fid_status)" >&2
    exit "$fid_status"
fi

stage "7/8 demo classifiers (tiny CNN) for gender, race and age on the curated tree"
mtf-classify baselines --data "$run/mtf-curated" --outdir "$run/classify" --models tiny_cnn \
    --tasks gender,race,age --recipe demo --cache-dir "$run/classify-cache" --no-progress --threads 1

stage "8/8 score the generator: gender, race and age shares vs the training archive, conditional consistency"
mtf-classify score --network "$ckpt" --num 1000 --outdir "$run/score" --device cpu --threads 1 \
    --classifier "$run/classify/gender/tiny_cnn/best.pt" \
    --classifier "$run/classify/race/tiny_cnn/best.pt" \
    --classifier "$run/classify/age/tiny_cnn/best.pt"
echo "attribute report: $run/score/report.md (bars: $run/score/attributes.png)"

stage "done in $(( $(date +%s) - t0 )) s. Everything is under $run:"
echo "  $run/mtf-noncurated/          synthetic non-curated tree + attributes.csv"
echo "  $run/mtf-curated/             synthetic curated trees (face_recognition, race, gender, age)"
echo "  $run/mtf-noncurated-32.zip    training archive (PNGs + dataset.json, sizes.json)"
echo "  $gan_run/   GAN run: config.yaml, log.txt, stats.jsonl, TensorBoard events, fakes-*.png, checkpoint-*.pt"
echo "  $run/generated/{Female,Male}/grid.png   generated faces per class"
echo "  $run/classify/                classifier runs + results.md (test accuracy per task)"
echo "  $gan_run/metrics.jsonl   FID/KID (when the Inception weights are present)"
echo "  $run/score/report.md          attribute report: shares vs the training archive, BBSE, consistency,"
echo "                                memorization; attributes.png, confidence_*.png, samples_*.png"
echo "TensorBoard: tensorboard --logdir $run/gan"
