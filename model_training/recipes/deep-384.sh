#!/usr/bin/env bash
# v3 with a ResNet-34-deep backbone (blocks 3-4-6-3 instead of 2-2-2-2), on 2 CPU cores: the new blocks start
# as the identity (face_parser.modeling.deepen_backbone), so training starts from v3's own quality. Tried
# because v3 fits its own training photos little better than validation (per-image F 0.889 against 0.870);
# 125 minutes of it were no better than v3 (README, "A deeper backbone"). bf16 autocast on a CPU with bf16
# instructions (pass --bf16 false on one without). Re-running resumes from the last checkpoint in --output_dir.
# Usage: MINUTES=125 bash model_training/recipes/deep-384.sh [extra Trainer arguments...]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash model_training/recipes/small-384.sh --init_from runs/small-384 --deepen_to 3,4,6,3 \
  --output_dir runs/deep-384 --max_train_minutes "${MINUTES:-125}" --num_train_epochs 100 \
  --learning_rate 1.5e-4 --bf16 true --use_cpu true "$@"
