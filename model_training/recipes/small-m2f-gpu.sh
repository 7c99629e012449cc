#!/usr/bin/env bash
# small-m2f.sh on one GPU (bf16, batch 16), on the clock: pass --max_train_minutes (a lent GPU has
# ~15 minutes in all); its cosine anneals over the minutes and re-running resumes. This is phase 2 of
# scripts/gpu_session.sh.
# Usage: [PY=python3] bash model_training/recipes/small-m2f-gpu.sh --max_train_minutes 8 [extra Trainer arguments...]
exec bash "$(dirname "$0")/small-m2f.sh" \
  --output_dir runs/small-m2f-gpu --warmup_steps 200 \
  --per_device_train_batch_size 16 --per_device_eval_batch_size 25 --save_strategy best --logging_steps 50 \
  --bf16 --tf32 true --dataloader_num_workers 14 --dataloader_persistent_workers true --disable_tqdm true "$@"
