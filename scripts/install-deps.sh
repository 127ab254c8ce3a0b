#!/usr/bin/env bash
# Installs the Debian 12 packages plait builds and runs with (run as root).
#   --with-peers  also the peers the tests and benchmarks compare against: PyTorch and oneDNN.
set -euo pipefail
packages=(build-essential cmake pkg-config
          openmpi-bin libopenmpi-dev      # MPI between workers
          libopenblas-dev                 # sgemm for the im2col convolution path
          libjpeg62-turbo-dev             # JPEG image folders
          zlib1g-dev                      # gzipped IDX files
          libjansson-dev                  # JSON: safetensors headers, plans, profiles, tuning files, metrics
          dataset-fashion-mnist)          # the offline default data set
if [ "${1:-}" = "--with-peers" ]; then
  packages+=(python3-torch python3-torchvision python3-numpy libdnnl-dev)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
