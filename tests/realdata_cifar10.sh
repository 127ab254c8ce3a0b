#!/usr/bin/env bash
# Real data: a brief ResNet-20 run on the CIFAR-10 JPEG copy must score well above chance (10%).
# Usage: realdata_cifar10.sh PLAIT DATA_DIR. Skips (77) when DATA_DIR lacks the tarball.
set -euo pipefail
plait=$1 data=$2
tarball=$data/cifar10-jpg.tar.gz
[ -f "$tarball" ] || { echo "skipped: $tarball not found"; exit 77; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
tar xzf "$tarball" -C "$work"
out=$("$plait" train --model resnet20 --dataset cifar10 --data "$work/cifar10" --epochs 2 --train-limit 8000 \
      --test-limit 2000 --batch-size 64 --lr 0.05 --schedule onecycle --threads 2 --seed 3 --quiet)
echo "$out"
accuracy=$(sed -n 's/.*test accuracy \([0-9.]*\)%.*/\1/p' <<<"$out")
[ -n "$accuracy" ] || { echo "no test accuracy in the output"; exit 1; }
awk -v a="$accuracy" 'BEGIN { if (a < 35) { print "CIFAR-10 accuracy " a "% is not well above chance (10%)"; exit 1 } }'
