#!/usr/bin/env bash
# Put a model package back together from what `training/gpu/device_train.sh` left in a
# device call's output folder (card.json, weights.safetensors.part0..N, weights.sha256),
# check the weights' SHA-256, and load the package once to prove it is whole:
#
#   bash training/gpu/join_package.sh FILES_AT PACKAGE_DIR
#
# PACKAGE_DIR must not exist yet; it is written next to itself first and renamed when
# complete, so a failed join leaves nothing behind.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 FILES_AT PACKAGE_DIR" >&2
  exit 2
fi
from=$1
package=$2
[ -e "$package" ] && { echo "$0: $package exists; choose a new folder" >&2; exit 2; }
for f in card.json weights.sha256 weights.safetensors.part0; do
  [ -f "$from/$f" ] || { echo "$0: $from/$f is missing" >&2; exit 2; }
done
python3 -c "import roidetect.learn.bundle" 2>/dev/null \
  || { echo "$0: python3 cannot import roidetect and torch; activate the environment roidetect is installed in" >&2; exit 2; }
partial=$package.partial-$$
trap 'rm -rf "$partial"' EXIT
mkdir -p "$partial"
parts=()
for i in 0 1 2 3 4 5 6 7 8 9; do  # split_package.sh numbers the pieces with one digit
  [ -f "$from/weights.safetensors.part$i" ] || break
  parts+=("$from/weights.safetensors.part$i")
done
cat "${parts[@]}" > "$partial/weights.safetensors"
cp "$from/card.json" "$partial/"
(cd "$partial" && sha256sum --check --quiet "$(cd "$from" && pwd)/weights.sha256")
python3 -c "import sys; from roidetect.learn.bundle import load_package; p = load_package(sys.argv[1]); print('loaded', p.card['name'], 'with', sum(t.numel() for t in p.network.parameters()), 'parameters')" "$partial"
mv "$partial" "$package"
trap - EXIT
echo "package written to $package"
