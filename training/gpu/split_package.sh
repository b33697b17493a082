#!/usr/bin/env bash
# Copy a model package into OUT_DIR in pieces a device call can bring back (files of at
# most 16 MiB): card.json, weights.safetensors.part0..N of 15 MiB, and weights.sha256.
# `training/gpu/join_package.sh` is the inverse.
#
#   bash training/gpu/split_package.sh PACKAGE_DIR OUT_DIR [PIECE_SIZE]
#
# PIECE_SIZE is split(1)'s --bytes (default 15M).
set -euo pipefail
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 PACKAGE_DIR OUT_DIR [PIECE_SIZE]" >&2
  exit 2
fi
package=$1
out=$2
size=${3:-15M}
for f in card.json weights.safetensors; do
  [ -f "$package/$f" ] || { echo "$0: $package/$f is missing" >&2; exit 2; }
done
mkdir -p "$out"
rm -f "$out"/weights.safetensors.part*
cp "$package/card.json" "$out/"
(cd "$package" && sha256sum weights.safetensors) > "$out/weights.sha256"
split --bytes="$size" --numeric-suffixes --suffix-length=1 "$package/weights.safetensors" "$out/weights.safetensors.part"
