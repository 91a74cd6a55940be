#!/usr/bin/env bash
# Train the world's text-to-image model on the project's GPU machine and return it as tar parts.
#
#   scripts/gpu/world_train.sh OUTDIR [MINUTES]        (run from the repository root; MINUTES defaults to 5)
#
# On the GPU machine, after installing the carried wheels (diffusers, pydantic; see ../shared/gpu/README.md):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD && scripts/gpu/world_train.sh "$OUT" 5
#
# Writes into OUTDIR:
#   world-train.log                training log (a progress line every ~10 s) and nvidia-smi
#   world-model.tar.part-NN        the trained pipeline directory as a tar, split into parts of <= 15 MB
#   world-model.sha256             checksums of the parts
#   world-preview.png              16 canonical prompts rendered by the saved pipeline (loaded back from disk)
# The parts are written even when training stops early, from the last intermediate save.
#
# Unpack on the development machine (FILES = where the parts were copied):
#   (cd FILES && sha256sum -c world-model.sha256) && cat FILES/world-model.tar.part-* | tar -xf - -C /tmp \
#     && cp -r /tmp/world-model/. pipelines/world/weights/
# then: promptbeam world eval pipelines/world/weights && promptbeam world eval pipelines/world/weights --headroom
#
# WORLD_DEVICE=cpu runs the same thing on a CPU (the smoke test in tests/test_world.py does, for a few seconds).
set -uo pipefail
OUTDIR=${1:?usage: scripts/gpu/world_train.sh OUTDIR [MINUTES]}
MINUTES=${2:-5}
DEVICE=${WORLD_DEVICE:-cuda}
WORK=${WORLD_WORK:-/tmp/world-model}
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR"
LOG="$OUTDIR/world-train.log"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true; } > "$LOG"
rm -rf "$WORK"
"$PY" -u -m pipelines.world.train --out "$WORK" --device "$DEVICE" --minutes "$MINUTES" 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
if [ ! -f "$WORK/model_index.json" ]; then
  echo "no saved model in $WORK (training exit status $status)" | tee -a "$LOG"
  exit 1
fi
"$PY" -u -m pipelines.world.train --preview "$WORK" "$OUTDIR/world-preview.png" --device "$DEVICE" 2>&1 | tee -a "$LOG"
tar -C "$(dirname "$WORK")" -cf - "$(basename "$WORK")" | split -b 15000000 -d -a 2 - "$OUTDIR/world-model.tar.part-"
(cd "$OUTDIR" && sha256sum world-model.tar.part-* > world-model.sha256)
ls -la "$OUTDIR" | tee -a "$LOG"
exit "$status"
