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
part() {  # PART SECONDS FILE ARGS...  (inference rows are saved as they come: a cut-short run keeps them)
  local name=$1 limit=$2 file=$3; shift 3
  echo "== $file (limit ${limit}s) ==" >&2
  timeout --kill-after=5 "$limit" "$PYTHON" -m fastnst.bench --device cuda --parts "$name" --json "$TMP/$file.json" "$@" \
    || echo "gpu_bench: $file failed or ran past ${limit}s (exit $?)" >&2
}
# Eager variants first (seconds), then the compiled ones (compilation dominates), each with the reference
# so every file has its own ratio, and fp32 with the compiled training variant so that its loss is checked
# against fp32's; the fastest compiled variant is re-run inside a Lightning Trainer.
part train 50 train_eager --train-size "$SIZE" --batch "$BATCH" --train-warmup 10 --train-steps 30 \
  --train-variants fp32,bf16,bf16+cl --no-trainer
part train 130 train_compiled --train-size "$SIZE" --batch "$BATCH" --train-warmup 10 --train-steps 30 \
  --train-variants fp32,bf16+cl+compile
part infer 40 infer_eager --infer-sizes 256x256,512x512,1920x1080 --infer-repeats 30 \
  --infer-variants fp32,fp32+cl,bf16+cl,fp16+cl,ort
part infer 80 infer_compiled --infer-sizes 256x256,512x512,1920x1080 --infer-repeats 30 \
  --infer-variants fp16+cl+compile
part data 30 data --data-workers 0,1,8 ${DATA_ROOT:+--data-root "$DATA_ROOT"}

"$PYTHON" - "$TMP" "$OUT" <<'PY'
import json, sys
from pathlib import Path
from fastnst.bench import format_report
tmp, out = Path(sys.argv[1]), Path(sys.argv[2])
report = {}
for file in ("train_eager", "train_compiled", "infer_eager", "infer_compiled", "data"):
    f = tmp / f"{file}.json"
    if not f.is_file():
        continue
    r = json.loads(f.read_text())
    report.setdefault("machine", r["machine"])
    report.setdefault("seconds", {}).update({file: v for v in r.get("seconds", {}).values()})
    for name, load in r.get("load", {}).items():  # other processes' load during each part, from its first file
        report.setdefault("load", {}).setdefault(name, load)
    part = file.split("_")[0]
    if part not in r:
        continue
    if part not in report:
        report[part] = r[part]
        continue
    rows = r[part]["results"]
    if part == "train":  # one reference row is enough: the compiled file's ratios are against its own reference
        # (its fp32 row is there so that the compiled variant's loss is checked against fp32 in the same file)
        rows = [row for row in rows if row["variant"] not in ("reference", "fp32")]
        report[part]["results"] += rows
    else:  # inference: place the compiled rows after each size's eager rows (its own baseline rows are dropped)
        seen = {(row["size"], row["path"]) for row in report[part]["results"]}
        rows = [row for row in rows if (row["size"], row["path"]) not in seen]
        merged = []
        for size in dict.fromkeys(row["size"] for row in report[part]["results"] + rows):
            merged += [row for row in report[part]["results"] + rows if row["size"] == size]
        base = {row["size"]: row for row in merged if row["path"].startswith("reference") and "images_per_s" in row}
        for row in rows:
            if row["size"] in base and "images_per_s" in row:
                row["vs_reference"] = row["images_per_s"] / base[row["size"]]["images_per_s"]
        report[part]["results"] = merged
if not report:
    sys.exit("gpu_bench: no part produced results")
out.write_text(json.dumps(report, indent=2, default=str))
print(format_report(report))
print(f"\nwrote {out}")
PY
echo "gpu_bench: total $(( $(date +%s) - START ))s" >&2
