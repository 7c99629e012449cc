#!/usr/bin/env bash
# The recipe of the shipped model. Re-running resumes from the last checkpoint in --output_dir.
cd "$(dirname "$0")/../.."
exec .venv/bin/python -m model_training.train \
  --dataset folder --data_dir ../shared/data/celebamask-mini --val_count 100 --split_seed 0 \
  --preset small --image_size 256 --matching fixed --class_weight_power 0.5 --rare_repeat 2 \
  --output_dir runs/small-256 --num_train_epochs 26 --learning_rate 3e-4 --weight_decay 0.05 \
  --lr_scheduler_type cosine --warmup_steps 100 --per_device_train_batch_size 8 --per_device_eval_batch_size 8 \
  --eval_strategy epoch --save_strategy epoch --save_total_limit 2 --load_best_model_at_end \
  --metric_for_best_model mean_f1_foreground --greater_is_better true --logging_steps 20 \
  --report_to none --dataloader_num_workers 0 --seed 0 "$@"
