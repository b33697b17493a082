#!/usr/bin/env bash
# Download, into .whl/ (git-ignored), the wheels that a lent GPU machine lacks for
# `roidetect train`: its image holds torch, lightning, numpy, scipy, scikit-image, tifffile,
# safetensors, pandas and the rest, but not monai, hydra-core, omegaconf or antlr4
# (/work/.library/device/KINDS.md). The versions are those of the local install, so the
# device trains with the libraries the tests ran against. Run from the repository root, where
# pip can reach a package index, before `training/gpu/device_train.sh` travels to the device.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
rm -f .whl/*.whl

version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }

platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
for name in monai hydra-core omegaconf; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$name==$(version "$name")"
done
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 pins) exists only as a source archive; it
# is pure Python, so a wheel built here installs on the device.
python3 -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
ls -l .whl
