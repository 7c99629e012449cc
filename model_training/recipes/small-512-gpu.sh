#!/usr/bin/env bash
# Next step for the parser's quality (issue 12), for a session lent a GPU: the v3 recipe
# (small-384.sh: same test / validation split, corrections and losses) at the full 512 px on one GPU
# (bf16, batch 16, 100 epochs). On 2 CPU cores 12 more epochs at 384 px plateaued (README, "Longer
# training is not the answer"); the challenge entries that beat it trained at 512 for hundreds of epochs.
# A lent GPU has ~15 minutes, so --max_train_minutes ends the run cleanly with a checkpoint, and
# re-running resumes from it. The data travels in a git-excluded folder (37 MB):
#   echo /.data/ >> .git/info/exclude && mkdir -p .data && cp -r ../shared/data/celebamask-mini .data/
#   device run: carry [".data"], command: PY=python3 bash model_training/recipes/small-512-gpu.sh
#               --data_dir .data/celebamask-mini --max_train_minutes 8; then copy runs/small-512-gpu/ to $OUT
# Usage: [PY=python3] bash model_training/recipes/small-512-gpu.sh [extra Trainer arguments...]
# (later arguments override small-384.sh's)
exec bash "$(dirname "$0")/small-384.sh" \
  --image_size 512 --output_dir runs/small-512-gpu --num_train_epochs 100 --warmup_steps 200 \
  --per_device_train_batch_size 16 --per_device_eval_batch_size 25 --save_total_limit 2 --logging_steps 50 \
  --bf16 --tf32 true --dataloader_num_workers 12 --dataloader_persistent_workers true --disable_tqdm true "$@"
