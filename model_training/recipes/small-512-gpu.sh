#!/usr/bin/env bash
# The v3 recipe (small-384.sh: same test / validation split, corrections and losses) on one GPU
# (bf16, batch 16) at 512 px, or another size with --image_size. A lent GPU has ~15 minutes, so
# --max_train_minutes ends the run with a checkpoint and its cosine anneals over the minutes;
# re-running resumes. scripts/gpu_session.sh runs it twice at once (448 and 512 px).
# Session 6 (H200, 5.7 minutes each, 46 and 37 epochs): validation pooled mean F1 0.8096 (448) and
# 0.8034 (512) against v3's 0.8128, so neither was shipped (README, "Training on a lent GPU").
# Usage: [PY=python3] bash model_training/recipes/small-512-gpu.sh [extra Trainer arguments...]
# (later arguments override small-384.sh's)
exec bash "$(dirname "$0")/small-384.sh" \
  --image_size 512 --output_dir runs/small-512-gpu --num_train_epochs 100 --warmup_steps 200 \
  --per_device_train_batch_size 16 --per_device_eval_batch_size 25 --save_strategy best --save_total_limit 2 --logging_steps 50 \
  --bf16 --tf32 true --dataloader_num_workers 12 --dataloader_persistent_workers true --disable_tqdm true "$@"
