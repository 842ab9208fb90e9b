#!/usr/bin/env bash
# One-call GPU benchmark of fastnst (training, inference, data loading), sized to finish in under
# 6 minutes on one GPU. Writes one JSON file and prints the tables.
#
#   bash scripts/gpu_bench.sh [OUT.json]            # default: bench-gpu-<date>.json in the repo root
#
# Environment knobs: BATCH (training batch, default 16), SIZE (training crop, default 256),
# DATA_ROOT (a folder of JPEGs for the data part; default: synthetic 640x480 JPEGs), PYTHON.
# Each part runs in its own process under its own time limit, so a slow part cannot eat the others'.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-gpu-$(date +%Y%m%d-%H%M%S).json}
BATCH=${BATCH:-16}
SIZE=${SIZE:-256}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fastnst-gpu-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# Python: this repo's .venv, else an interpreter that already imports fastnst, else a new .venv
# (installs nothing beyond `pip install -e .`; --system-site-packages reuses an installed torch).
if [[ -n "${PYTHON:-}" ]]; then :
elif [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python
elif python3 -c "import fastnst, torch" 2>/dev/null; then PYTHON=python3
else
  echo "gpu_bench: creating .venv and running pip install -e . ..." >&2
  python3 -m venv --system-site-packages .venv && PYTHON=.venv/bin/python
  "$PYTHON" -m pip install -q -e . --no-deps && "$PYTHON" -c "import torch, pytorch_lightning, PIL" 2>/dev/null \
    || "$PYTHON" -m pip install -q -e . || { echo "gpu_bench: pip install -e . failed" >&2; exit 1; }
fi
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "gpu_bench: no CUDA GPU visible to $PYTHON" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true

START=$(date +%s)
part() {  # NAME SECONDS ARGS...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s) ==" >&2
  timeout --kill-after=10 "$limit" "$PYTHON" -m fastnst.bench --device cuda --parts "$name" --json "$TMP/$name.json" "$@" \
    || echo "gpu_bench: part $name failed or ran past ${limit}s (exit $?)" >&2
}
part train 180 --train-size "$SIZE" --batch "$BATCH" --train-warmup 15 --train-steps 30 \
  --train-variants fp32,bf16,bf16+cl,bf16+cl+compile
part infer 120 --infer-sizes 256x256,512x512,1920x1080 --infer-repeats 30 \
  --infer-variants fp32,fp32+cl,bf16+cl,fp16+cl,fp16+cl+compile,ort
part data 35 --data-workers 0,1,8 ${DATA_ROOT:+--data-root "$DATA_ROOT"}

"$PYTHON" - "$TMP" "$OUT" <<'PY'
import json, sys
from pathlib import Path
from fastnst.bench import format_report
tmp, out = Path(sys.argv[1]), Path(sys.argv[2])
report = {}
for part in ("train", "infer", "data"):
    f = tmp / f"{part}.json"
    if f.is_file():
        r = json.loads(f.read_text())
        report.setdefault("machine", r["machine"])
        report.setdefault("seconds", {}).update(r.get("seconds", {}))
        report[part] = r[part]
if not report:
    sys.exit("gpu_bench: no part produced results")
out.write_text(json.dumps(report, indent=2, default=str))
print(format_report(report))
print(f"\nwrote {out}")
PY
echo "gpu_bench: total $(( $(date +%s) - START ))s" >&2
