#!/usr/bin/env bash
# Mask2Former (preset small-m2f: multi-scale deformable-attention pixel decoder, masked-attention
# decoder, every decoder layer supervised) around the shipped model's trained backbone
# (--init_backbone_from models/face-parser); v3's split, left/right corrections and losses
# (small-384.sh), its pixel decoder and transformer decoder new. Too slow to converge on 2 CPU cores:
# small-m2f-gpu.sh is the run a lent GPU makes; this file is its CPU form and the comparison below.
# The same 15 minutes at 256 px on 2 CPU cores, against the small MaskFormer with the same backbone and
# a new decoder (--preset small): README, "Mask2Former or MaskFormer".
# Usage: bash model_training/recipes/small-m2f.sh [extra Trainer arguments...] (later ones win)
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
exec "$PY" -m model_training.train \
  --dataset folder --data_dir ../shared/data/celebamask-mini --test_count 100 --val_count 100 --split_seed 0 \
  --fix_lr_convention true --preset small-m2f --init_backbone_from models/face-parser --image_size 384 \
  --matching fixed --class_weight_power 0.5 --semantic_dice_weight 1.0 --rare_repeat 2 \
  --output_dir runs/small-m2f --num_train_epochs 100 --learning_rate 2e-4 --weight_decay 0.05 \
  --lr_scheduler_type cosine --warmup_steps 100 --per_device_train_batch_size 8 --per_device_eval_batch_size 8 \
  --eval_strategy epoch --save_strategy epoch --save_total_limit 2 --load_best_model_at_end \
  --metric_for_best_model mean_f1_foreground --greater_is_better true --logging_steps 20 \
  --report_to none --dataloader_num_workers 0 --seed 0 "$@"
