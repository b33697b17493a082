#!/usr/bin/env bash
# Train `experiment=phantoms_gpu` on one lent GPU machine in a single device call, and leave
# the model package where the call can bring it back. Run from the repository root:
#
#   bash training/gpu/device_train.sh FIT_SECONDS OUT_DIR [override ...]
#
# FIT_SECONDS  wall time of the fit (trainer.max_time); validation phantoms, the score
#              calibration and packaging come on top (README.md beside this file has the
#              measured times)
# OUT_DIR      where the package's pieces, the log and run.json go ($OUT on the device)
# override     more `roidetect train` overrides, after the device's own (so they win)
#
# The device image has torch and lightning but not monai, hydra-core, omegaconf or antlr4:
# they travel as wheels in .whl/ (`training/gpu/fetch_wheels.sh`), installed into
# /tmp/site. A device call returns files of at most 16 MiB, so the weights (18 MB in
# float32) come back in 15 MiB pieces with their SHA-256 (`split_package.sh`);
# `join_package.sh` puts them together here and checks the sum.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ $# -lt 2 ]; then
  echo "usage: $0 FIT_SECONDS OUT_DIR [override ...]" >&2
  exit 2
fi
fit_seconds=$1
out=$2
shift 2
case $fit_seconds in
  ''|*[!0-9]*) echo "$0: FIT_SECONDS must be a whole number of seconds, got '$fit_seconds'" >&2; exit 2 ;;
esac
mkdir -p "$out"
run=${ROIDETECT_DEVICE_RUN:-/tmp/roidetect-device-run}
start=$(date +%s)

if ! python3 -c "import monai, hydra, omegaconf" 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "$0: no wheels in .whl/ (run training/gpu/fetch_wheels.sh; carry .whl)" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch, lightning, monai; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'lightning', lightning.__version__, 'monai', monai.__version__)"

# DataLoader workers hand batches over in shared memory: about 30 MB a batch, 2 batches
# in flight per worker. Where /dev/shm is small (a container's 64 MB), fewer workers.
workers=14
shm_kib=$(df -k --output=avail /dev/shm 2>/dev/null | tail -n 1 | tr -d ' ')
if [ -n "$shm_kib" ] && [ "$shm_kib" -lt 2097152 ]; then
  workers=2
  echo "$0: /dev/shm has $((shm_kib / 1024)) MiB free; 2 data workers instead of 14" >&2
fi
max_time=$(printf '00:%02d:%02d:%02d' $((fit_seconds / 3600)) $((fit_seconds % 3600 / 60)) $((fit_seconds % 60)))
# Device settings:
# - 14 of the 16 cores make phantoms, and each phantom gives 32 patches, not 16: a 128^3
#   phantom takes 2-12 s (4 s on average on one core here), so 14 workers make about 95
#   patches/s instead of 52 (benchmarks/bench_patch_feed.py), about 24 steps of batch 4 a
#   second, more than a 96^3 UNet of this size is expected to take on one GPU;
# - epochs of 4096 patches (43 s at 95 patches/s), so that validation stays a small part of
#   each: the rehearsal's validation took 5.5 s per 128^3 phantom on one core, of which the
#   network's sliding window took 3.4-4.1 s, so detection and scoring on the CPU side take
#   about 1.5 s per phantom (more once the network finds more), some 12 s for the 8; 420 s
#   of fit then holds about 8 epochs to pick the best from;
# - the score calibration that ends the run skips the 8 passes of --tta: `roidetect calibrate`
#   refits both calibrations on the 32 calibration phantoms afterwards (README.md beside this
#   file), and on the CPU side those passes would cost more than a minute of the device's time;
# - cuDNN picks its fastest 3D convolutions for the fixed 96^3 patches instead of
#   deterministic ones, as nnU-Net does: a run is then repeatable only up to GPU rounding.
# The whole log goes to OUT_DIR/train.log (it comes back even if the call is cut off); the
# call's own output keeps to the last lines, progress bars turned into lines.
status=0
python3 -m roidetect train experiment=phantoms_gpu out="$run" overwrite=true seed=0 \
  trainer.max_time="$max_time" data.num_workers=$workers data.patches_per_phantom=32 data.patches_per_epoch=4096 \
  calibration.tta=false trainer.benchmark=true trainer.deterministic=false \
  "$@" > "$out/train.log" 2>&1 || status=$?
tr '\r' '\n' < "$out/train.log" | grep -v '^\s*$' | tail -n 40 || true
echo "roidetect train ended with status $status after $(( $(date +%s) - start )) s"

cp "$run/run.json" "$out/" 2>/dev/null || true
metrics=$(find "$run/csv" -name metrics.csv 2>/dev/null | head -n 1 || true)
[ -n "$metrics" ] && cp "$metrics" "$out/metrics.csv"
package=$run/model
if [ -f "$package/weights.safetensors" ]; then
  bash training/gpu/split_package.sh "$package" "$out"
  ls -l "$out"
else
  echo "$0: no model package in $package" >&2
  [ "$status" -ne 0 ] || status=1
fi
echo "device_train.sh: $(( $(date +%s) - start )) s in all"
exit "$status"
