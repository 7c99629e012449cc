#!/usr/bin/env bash
# v3: fine-tune the v2 model (models/face-parser, 256 px) at 384 px on 2 CPU cores, with a test split
# that training never reads, left/right-reversed masks corrected, and a soft Dice term on the
# per-pixel class probabilities. Re-running resumes from the last checkpoint in --output_dir.
# Usage: bash model_training/recipes/small-384.sh [extra Trainer arguments...]
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
exec "$PY" -m model_training.train \
  --dataset folder --data_dir ../shared/data/celebamask-mini --test_count 100 --val_count 100 --split_seed 0 \
  --fix_lr_convention true --init_from models/face-parser --image_size 384 --matching fixed \
  --class_weight_power 0.5 --semantic_dice_weight 1.0 --rare_repeat 2 \
  --output_dir runs/small-384 --num_train_epochs 6 --learning_rate 2e-4 --weight_decay 0.05 \
  --lr_scheduler_type cosine --warmup_steps 50 --per_device_train_batch_size 8 --per_device_eval_batch_size 8 \
  --eval_strategy epoch --save_strategy epoch --save_total_limit 4 --load_best_model_at_end \
  --metric_for_best_model mean_f1_foreground --greater_is_better true --logging_steps 20 \
  --report_to none --dataloader_num_workers 0 --seed 0 "$@"
