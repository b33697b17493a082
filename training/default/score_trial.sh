#!/usr/bin/env bash
# Calibrate a trial model and score it beside the shipped one, in the order the shipping rule
# reads them: the 32 calibration phantoms (with the paired per-volume comparison), the
# independent generator's seed-8 set, then the held-out set and the seed-7 set.
#
#   bash training/default/score_trial.sh PACKAGE NAME
#
# PACKAGE  the trial's model package as training wrote it (uncalibrated is fine)
# NAME     short name; writes runs/NAME/model-calibrated, runs/{cal,indep8,heldout,indep}-NAME/
#          (each with heldout.json and a table), runs/paired-NAME.txt and
#          runs/paired-NAME-heldout.txt
#
# Needs the data sets of recipe.sh (steps 2, 3 and 5) in runs/ and runs/independent8
# (`independent_phantoms.py --out runs/independent8 --n 16 --size 128 --seed 8`). The
# shipped model's scorings (runs/*-shipped) are made first where missing; the classical
# baseline is scored once and copied. On 2 CPU cores: about 6 minutes for the shipped
# network's size (phantoms_gpu's calibration took 2 min 48 s against 2 min 19 s).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -ne 2 ] || [ "$2" = shipped ] || [[ ! $2 =~ ^[A-Za-z0-9._-]+$ ]]; then
  echo "usage: $0 PACKAGE NAME (NAME: letters, digits, '.', '_', '-'; not 'shipped')" >&2
  exit 2
fi
package=$1
name=$2
for data in runs/calibration runs/independent8 runs/heldout/cathode runs/heldout/anode runs/heldout/nmc-real \
            runs/independent; do
  [ -f "$data/dataset.json" ] || { echo "$0: $data is missing (training/default/recipe.sh steps 2, 3 and 5)" >&2; exit 2; }
done
score() {  # SET WHO MODEL: evaluate_heldout.py on SET's data into runs/SET-WHO, reusing runs/SET-shipped's classical scoring
  local out=runs/$1-$2 shipped=runs/$1-shipped model=$3 data
  case $1 in
    cal) data=(runs/calibration) ;;
    indep8) data=(runs/independent8) ;;
    heldout) data=(runs/heldout/cathode runs/heldout/anode runs/heldout/nmc-real) ;;
    indep) data=(runs/independent) ;;
  esac
  mkdir -p "$out"
  [ "$out" = "$shipped" ] || cp -r "$shipped"/*-classical "$out/" 2>/dev/null || true
  python training/default/evaluate_heldout.py --model "$model" --out "$out" --set inference.precision=float32 \
    "${data[@]}" > "$out.log" 2>&1
}
for set in cal indep8 heldout indep; do
  [ -f "runs/$set-shipped/heldout.json" ] || score "$set" shipped default
done

calibrated=runs/$name/model-calibrated
mkdir -p "runs/$name"
roidetect calibrate "$package" --data runs/calibration --overlap 0.5 --out "$calibrated" --overwrite -q
score cal "$name" "$calibrated"
python training/default/paired_comparison.py runs/cal-shipped/heldout.json "runs/cal-$name/heldout.json" \
  > "runs/paired-$name.txt"
score indep8 "$name" "$calibrated"
echo "== the rule's first inputs are ready ($(date -u +%H:%M) UTC): runs/paired-$name.txt, runs/indep8-$name.log"
score heldout "$name" "$calibrated"
python training/default/paired_comparison.py runs/heldout-shipped/heldout.json "runs/heldout-$name/heldout.json" \
  > "runs/paired-$name-heldout.txt"
score indep "$name" "$calibrated"
echo "== all scored ($(date -u +%H:%M) UTC)"
cat "runs/paired-$name.txt"
