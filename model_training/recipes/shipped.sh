#!/usr/bin/env bash
# How the shipped model (models/face-parser, v3) was made, end to end. Each step resumes or is skipped
# when its output exists. Steps 2-3 ran on one NVIDIA H200 (PY=python3 there); on the GPU machine the
# images were pre-resized to 320 px (JPEG q82, masks nearest) to fit the transfer limit of that machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/celebamask-mini}
# 1. from scratch on 2 CPU cores: 26 epochs, batch 8, ~100 min (val mean F1 0.70)
bash model_training/recipes/small-256.sh --data_dir "$DATA"
"$PY" -m model_training.export --checkpoint runs/small-256 --out runs/export-cpu --run_dir runs/small-256 \
  --data_dir "$DATA" --reports reports/export-cpu
# 2. GPU fine-tune of step 1: 80-epoch cosine schedule, stopped by the 6-minute budget at epoch 78
PY=$PY bash model_training/recipes/small-256-gpu.sh --data_dir "$DATA" --init_from runs/export-cpu \
  --output_dir runs/small-256-gpu --max_train_minutes 6
"$PY" -m model_training.export --checkpoint runs/small-256-gpu --out runs/export-gpu --run_dir runs/small-256-gpu \
  --data_dir "$DATA" --reports reports/export-gpu
# 3. a second, shorter fine-tune of step 2 (stopped by a 3-minute budget at epoch 47)
PY=$PY bash model_training/recipes/small-256-gpu.sh --data_dir "$DATA" --init_from runs/export-gpu \
  --output_dir runs/small-256-gpu2 --max_train_minutes 3
# 4. average the best checkpoints of steps 2 and 3 (model soup), export fp16 with the card
best() { "$PY" -c "import json,sys; from transformers.trainer_utils import get_last_checkpoint as g
print(json.load(open(g(sys.argv[1]) + '/trainer_state.json'))['best_model_checkpoint'])" "$1"; }
"$PY" -m model_training.average --out runs/soup --checkpoints "$(best runs/small-256-gpu)" "$(best runs/small-256-gpu2)"
"$PY" -m model_training.export --checkpoint runs/soup --out runs/export-v2 --data_dir "$DATA" \
  --run_dir runs/small-256 runs/small-256-gpu runs/small-256-gpu2 --reports reports/export-v2 \
  --command "bash model_training/recipes/shipped.sh" --version face-parser-small-256-v2
# 5. v3: fine-tune v2 at 384 px on 2 CPU cores (6 epochs, ~75 min), with a 100-pair test split that no
#    step reads (the pairs v2 held out), left/right-reversed masks corrected and a soft Dice term
PY=$PY bash model_training/recipes/small-384.sh --data_dir "$DATA" --init_from runs/export-v2 --max_train_minutes 75
"$PY" -m model_training.export --checkpoint runs/small-384 --out models/face-parser --data_dir "$DATA" \
  --image_size 384 --test_count 100 --run_dir runs/small-384 --reports reports/shipped \
  --command "bash model_training/recipes/shipped.sh" --version face-parser-small-384-v3
