#!/usr/bin/env bash
# Real data: a brief ResNet-20 run on Caltech-101 (101 classes, BACKGROUND_Google left out, seeded 80/20
# split, images resized to 32 px) must score well above chance (1%) and above the largest class (~9%).
# Usage: realdata_caltech101.sh PLAIT DATA_DIR. Skips (77) when DATA_DIR lacks the tarball.
set -euo pipefail
plait=$1 data=$2
tarball=$data/caltech101-jpg.tar.gz
[ -f "$tarball" ] || { echo "skipped: $tarball not found"; exit 77; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
tar xzf "$tarball" -C "$work"
out=$("$plait" train --model resnet20 --dataset caltech101 --data "$work/caltech101" --image-size 32 --epochs 3 \
      --batch-size 64 --lr 0.05 --schedule onecycle --threads 2 --seed 3 --quiet)
echo "$out"
accuracy=$(sed -n 's/.*test accuracy \([0-9.]*\)%.*/\1/p' <<<"$out")
[ -n "$accuracy" ] || { echo "no test accuracy in the output"; exit 1; }
awk -v a="$accuracy" 'BEGIN { if (a < 20) { print "Caltech-101 accuracy " a "% is not well above chance"; exit 1 } }'
