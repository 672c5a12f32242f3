#!/usr/bin/env bash
# Installs agla's build dependencies on Debian 12 and configures + builds the project in ./build.
# OpenBLAS is installed on purpose: Debian's libtorch calls the system libblas.so.3, and the
# reference BLAS it otherwise falls back to is ~40x slower for matrix products.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q \
  build-essential cmake libtorch-dev libopenblas0-pthread libeigen3-dev libstb-dev \
  libjpeg62-turbo-dev nlohmann-json3-dev libgtest-dev libbenchmark-dev
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
