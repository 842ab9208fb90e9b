#!/usr/bin/env bash
# Quality of the light network against the default one: both trained for the same steps on the same photos
# and painting under one fixed VGG19 weights file, then measured on held-out photos under that same loss
# network (python -m fastnst.evaluate). Prints the two reports and the ratios of their style and content loss.
#
#   bash scripts/quality_compare.sh OUT_DIR            # e.g. out/quality
#
# Environment: DATA (default ../shared/data: content/ to train, heldout/content/ to measure, styles/),
# STYLE (default starry_night.jpg), STEPS (default 400), SIZE (crop, default 256), BATCH (default 2),
# MODELS (default "johnson mobile"), VGG (a VGG19 state dict; default: a seeded random VGG19 written to
# OUT_DIR once, so every run shares one loss network; pass imagenet weights for a real comparison), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: quality_compare.sh OUT_DIR}
DATA=${DATA:-../shared/data}
STYLE=${STYLE:-starry_night.jpg}
STEPS=${STEPS:-400}
SIZE=${SIZE:-256}
BATCH=${BATCH:-2}
MODELS=${MODELS:-johnson mobile}
PYTHON=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
mkdir -p "$OUT"
VGG=${VGG:-$OUT/vgg19_random_seed1234.pth}
if [[ ! -f "$VGG" ]]; then
  "$PYTHON" -c "import sys, torch; from torchvision.models import vgg19; torch.manual_seed(1234); \
torch.save(vgg19(weights=None).features.state_dict(), sys.argv[1])" "$VGG"
fi
for m in $MODELS; do
  if [[ ! -f "$OUT/$m/checkpoints/last.ckpt" ]]; then
    WANDB_MODE=disabled "$PYTHON" train.py model="$m" data.root="$DATA/content" style.image="$DATA/styles/$STYLE" \
      data.image_size="$SIZE" data.batch_size="$BATCH" trainer.max_steps="$STEPS" loss.vgg_weights="$VGG" \
      trainer.precision=bf16-mixed logger=csv callbacks=none checkpoint.every_n_steps="$STEPS" seed=0 \
      hydra.run.dir="$OUT/$m"
  fi
  "$PYTHON" -m fastnst.evaluate --ckpt "$OUT/$m/checkpoints/last.ckpt" --style "$DATA/styles/$STYLE" \
    --images "$DATA/heldout/content" --longer-side "$SIZE" --preset johnson --vgg-weights "$VGG" --json "$OUT/$m.json"
done
"$PYTHON" - "$OUT" $MODELS <<'PY'
import json, sys
out, models = sys.argv[1], sys.argv[2:]
r = {m: json.load(open(f"{out}/{m}.json"))["summary"]["model"] for m in models}
base = models[0]
for m in models[1:]:
    for k in ("style", "content", "total"):
        print(f"{m} / {base} held-out mean {k} loss: {r[m][k]['mean']:.4g} / {r[base][k]['mean']:.4g} = "
              f"{r[m][k]['mean'] / r[base][k]['mean']:.3f}x")
PY
