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
t0=$(date +%s)
stage() { echo; echo "== [$(( $(date +%s) - t0 )) s] $*"; }

stage "1/3 synthetic non-curated MTF tree (people/*.jpg + attributes.csv)"
mtf-gan synth --out "$run/mtf-noncurated" --layout noncurated \
    --people 32 --per-person 24 --resolution 64 --seed 0

stage "2/3 synthetic curated MTF trees (<task>/{train,val,test}/<class>/*.png)"
mtf-gan synth --out "$run/mtf-curated" --layout curated \
    --people 24 --per-person 10 --resolution 64 --seed 1

stage "3/3 prepare the non-curated tree as a 32x32 training archive, labelled by gender"
mtf-gan prepare "$run/mtf-noncurated" "$run/mtf-noncurated-32.zip" --resolution 32 \
    --labels "$run/mtf-noncurated/attributes.csv" --label-column gender --workers 2

stage "done in $(( $(date +%s) - t0 )) s. Everything is under $run:"
echo "  $run/mtf-noncurated/          synthetic non-curated tree + attributes.csv"
echo "  $run/mtf-curated/             synthetic curated trees (face_recognition, race, gender, age)"
echo "  $run/mtf-noncurated-32.zip    training archive (PNGs + dataset.json, sizes.json)"
