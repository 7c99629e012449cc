#!/usr/bin/env bash
# Fine-tune the shipped model on one GPU (bf16, batch 16, many more epochs than the CPU recipe).
# Usage: [PY=python3] bash model_training/recipes/small-256-gpu.sh [extra Trainer arguments...]
# Re-running resumes from the last checkpoint in --output_dir.
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
exec "$PY" -m model_training.train \
  --dataset folder --data_dir ../shared/data/celebamask-mini --val_count 100 --split_seed 0 \
  --preset small --init_from models/face-parser --image_size 256 --matching fixed \
  --class_weight_power 0.5 --rare_repeat 2 \
  --output_dir runs/small-256-gpu --num_train_epochs 80 --learning_rate 3e-4 --weight_decay 0.05 \
  --lr_scheduler_type cosine --warmup_steps 200 --per_device_train_batch_size 16 --per_device_eval_batch_size 25 \
  --bf16 --tf32 true --dataloader_num_workers 12 --dataloader_persistent_workers true \
  --eval_strategy epoch --save_strategy epoch --save_total_limit 2 --load_best_model_at_end \
  --metric_for_best_model mean_f1_foreground --greater_is_better true --logging_steps 50 \
  --report_to none --disable_tqdm true --seed 0 "$@"
