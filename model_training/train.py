"""Train or fine-tune the face parser with the Hugging Face Trainer.

The Trainer brings checkpointing, resume, evaluation every epoch (in ``eval()``
mode), logging, mixed precision and ``torchrun`` / ``accelerate launch``
multi-GPU training. This module adds the data, the loss and the export.

    python -m model_training.train --dataset folder --data_dir ../shared/data/celebamask-mini \
        --output_dir runs/small --num_train_epochs 30
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import LambdaLR
from transformers import (
    AutoModelForUniversalSegmentation,
    HfArgumentParser,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from face_parser.modeling import (
    build_model,
    deepen_backbone,
    init_backbone,
    init_from_pretrained,
    save_model_folder,
)
from face_parser.postprocess import label_map, semantic_scores
from face_parser.preprocess import PreprocessConfig
from model_training.augment import AugmentConfig
from model_training.data import (
    PAD_INDEX,
    RARE_CLASSES,
    CopyPaste,
    EvalSubset,
    TrainingSubset,
    balanced_class_weights,
    class_statistics,
    collate,
    holding,
    label_sizes,
    oversample,
)
from model_training.datasets.base import DatasetError
from model_training.datasets.loaders import OFFICIAL_SPLITS, open_dataset
from model_training.datasets.lr_convention import fix_conventions
from model_training.ema import WeightEma, ema_folder
from model_training.losses import fixed_assignment_loss, hungarian_loss, semantic_ce
from model_training.metrics import IGNORE_INDEX, ConfusionMatrix


@dataclass
class DataArguments:
    dataset: str = field(default="folder", metadata={"help": "folder | celebamask-hq | hf | lapa"})
    data_dir: str = field(default="../shared/data/celebamask-mini", metadata={"help": "dataset folder or hub id"})
    val_count: int = field(default=100, metadata={
        "help": "pairs held out for validation (folder, hf; CelebAMask-HQ and LaPa use their official splits)"})
    test_count: int = field(default=0, metadata={
        "help": "pairs held out as a test split that training never reads (folder, hf); score it with "
                "model_training.evaluate --split test"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train/validation/test split"})
    fix_lr_convention: bool = field(default=True, metadata={
        "help": "swap left/right ids of masks that use the reversed convention (found from part centroids)"})
    image_column: str = field(default="image", metadata={"help": "hf: image column"})
    label_column: str = field(default="label", metadata={"help": "hf: label-map column"})
    image_size: int = field(default=256, metadata={"help": "square model input size"})
    min_scale: float = field(default=0.8, metadata={"help": "augmentation: smallest zoom (<1 zooms out)"})
    max_scale: float = field(default=1.2, metadata={"help": "augmentation: largest zoom"})
    max_rotate_deg: float = field(default=15.0, metadata={"help": "augmentation: rotation range (degrees)"})
    rare_repeat: int = field(default=2, metadata={"help": "times an image with a rare class is seen per epoch"})
    copy_paste: float = field(default=0.0, metadata={
        "help": "probability that a training sample gets an accessory (glasses, hat, earring, necklace) pasted "
                "from another training photo (model_training.data.CopyPaste)"})


@dataclass
class ModelArguments:
    preset: str = field(default="small",
                        metadata={"help": "architecture when training from scratch: small | small-m2f | swin-base "
                                          "(tiny, tiny-m2f: tests)"})
    init_from: str | None = field(default=None, metadata={"help": "save_pretrained folder or hub id to fine-tune"})
    init_backbone_from: str | None = field(default=None, metadata={
        "help": "model folder whose backbone starts the preset's (same backbone, e.g. small -> small-m2f)"})
    deepen_to: str | None = field(default=None, metadata={
        "help": "ResNet blocks per stage, e.g. 3,4,6,3: the started model's stages get identity-initialised "
                "blocks at their ends, so training starts from its quality with more depth to learn"})
    num_queries: int | None = field(default=None, metadata={"help": "queries (default: classes for small)"})
    matching: str = field(default="fixed", metadata={"help": "fixed (query k = class k) | hungarian (stock loss)",
                                                     "choices": ["fixed", "hungarian"]})
    class_weight_power: float = field(default=0.5, metadata={"help": "0 = no class balancing"})
    semantic_dice_weight: float = field(default=0.0, metadata={
        "help": "fixed matching: weight of a soft Dice loss on the per-pixel class probabilities"})
    semantic_lovasz_weight: float = field(default=0.0, metadata={
        "help": "fixed matching: weight of a Lovász-softmax loss (an IoU surrogate) on the class probabilities"})
    ema_decay: float = field(default=0.0, metadata={
        "help": "keep an exponential moving average of the weights with this decay per step (e.g. 0.995; 0 = off): "
                "it is what is evaluated, chosen as best and exported (model_training.ema)"})
    export_dir: str | None = field(default=None, metadata={"help": "write the best model here as a HF folder"})
    export_fp16: bool = field(default=True, metadata={"help": "store exported weights in float16"})
    max_train_minutes: float | None = field(
        default=None, metadata={"help": "stop (evaluate and save) after this much wall-clock training time; "
                                        "a cosine schedule then anneals over this time, not over the epochs"})


def rank_zero_clock(args: TrainingArguments) -> float | None:
    """Rank 0's ``time.time()`` on every rank under torch.distributed (a collective: every rank calls it at
    the same point), None in a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    now = torch.tensor([time.time()], dtype=torch.float64, device=args.device)  # float32: 2-minute steps
    dist.broadcast(now, src=0)
    return float(now.item())


class TimeBudget(TrainerCallback):
    """Ends training cleanly (evaluate, save) once the wall-clock budget is spent, so that a run
    on a lent machine with a hard time limit always leaves a checkpoint behind.

    With a cosine schedule the learning rate follows the budget's clock, not the step count: nobody
    knows ahead how many steps an unfamiliar machine makes in its minutes, and a cosine cut off
    half-way never anneals. A resumed run anneals again over its own new budget.

    Under torchrun every rank reads rank 0's clock (:meth:`now`): with clocks of their own, started when
    each had read its data, one rank stopped to evaluate and save while another took a step, and both
    waited on each other for ever; their learning rates differed too."""

    def __init__(self, minutes: float):
        self.seconds = 60 * minutes
        self.shared_now: float | None = None  # rank 0's clock at the last step, under torch.distributed
        self.deadline = time.time() + self.seconds

    def now(self) -> float:
        """Rank 0's time as of the last step under torch.distributed (one stop step, one learning rate for
        all ranks), this process's own otherwise."""
        return time.time() if self.shared_now is None else self.shared_now

    def on_train_begin(self, args, state, control, **kwargs):
        self.shared_now = rank_zero_clock(args)
        self.deadline = self.now() + self.seconds

    def on_step_end(self, args, state, control, **kwargs):
        self.shared_now = rank_zero_clock(args)
        if self.now() > self.deadline:
            control.should_training_stop = control.should_evaluate = control.should_save = True

    def cosine(self, optimizer: torch.optim.Optimizer, warmup_steps: int) -> BudgetCosine:
        """Linear warm-up over ``warmup_steps``, then cosine from 1 to 0 as the budget runs out."""
        return BudgetCosine(optimizer, self, warmup_steps)

    def factor(self, steps: int, warmup_steps: int) -> float:
        """The learning rate's multiplier after ``steps`` steps of this run."""
        warm = min(1.0, (steps + 1) / warmup_steps) if warmup_steps else 1.0
        spent = min(1.0, 1 - (self.deadline - self.now()) / self.seconds)
        return warm * 0.5 * (1 + math.cos(math.pi * spent))


class BudgetCosine(LambdaLR):
    """:meth:`TimeBudget.cosine`'s schedule. Resumed from a checkpoint, it keeps this run's learning rate
    (``--learning_rate``, not the checkpoint's) and warms up again from the step it resumes at: restored
    as it was, a continuation jumped straight to the old run's peak rate, and a Mask2Former resumed at
    3e-4 fell from 0.791 to 0.714 validation F1 in one epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, budget: TimeBudget, warmup_steps: int):
        self.first_step = 0
        super().__init__(optimizer, lambda step: budget.factor(step - self.first_step, warmup_steps))

    def load_state_dict(self, state_dict: dict) -> None:
        base_lrs = self.base_lrs
        super().load_state_dict(state_dict)
        self.base_lrs, self.first_step = base_lrs, self.last_epoch
        factor = self.lr_lambdas[0](self.last_epoch)
        for group, base_lr in zip(self.optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base_lr * factor


class ParserTrainer(Trainer):
    """Trainer with the parser's loss; evaluation returns class scores for the metrics."""

    def __init__(self, *args, matching: str, class_weights: torch.Tensor | None, semantic_dice_weight: float = 0.0,
                 semantic_lovasz_weight: float = 0.0, time_budget: TimeBudget | None = None,
                 ema: WeightEma | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.matching, self.class_weights = matching, class_weights
        self.loss_weights = {"semantic_dice_weight": semantic_dice_weight,
                             "semantic_lovasz_weight": semantic_lovasz_weight}
        self.time_budget, self.ema = time_budget, ema
        if ema is not None:
            self.add_callback(ema)

    def train(self, *args, **kwargs):
        """With an EMA the model ends holding the averaged weights: the best checkpoint's
        (``load_best_model_at_end``) or the last step's."""
        result = super().train(*args, **kwargs)
        if self.ema is not None:
            if not self.args.load_best_model_at_end:
                self.model.load_state_dict(self.ema.module.state_dict())
            self.ema = None  # adopted: evaluate() now scores the model as it is
        return result

    def evaluate(self, *args, **kwargs):
        """Evaluation (and so the best checkpoint) scores the averaged weights when there are any."""
        if self.ema is None:
            return super().evaluate(*args, **kwargs)
        with self.ema.swapped_into(self.model):
            return super().evaluate(*args, **kwargs)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        """Resume with every weight of the checkpoint (see :func:`load_checkpoint`), and its average."""
        model = model or self.model
        model.load_state_dict(load_checkpoint(resume_from_checkpoint).state_dict())
        if self.ema is not None:
            saved = ema_folder(resume_from_checkpoint)
            self.ema.restore(load_checkpoint(str(saved)) if saved.is_dir() else model)

    def _load_best_model(self) -> None:
        """``load_best_model_at_end``: every weight of the best checkpoint (see :func:`load_checkpoint`),
        the averaged ones when it has them (those were what made it the best; a run that turned the EMA on
        when resumed may find its best among the checkpoints from before)."""
        best = self.state.best_model_checkpoint
        averaged = ema_folder(best)
        source = averaged if self.ema is not None and averaged.is_dir() else Path(best)
        self.model.load_state_dict(load_checkpoint(str(source)).state_dict())

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """A cosine schedule under a time budget runs on the clock (see :class:`TimeBudget`)."""
        if self.time_budget is None or self.args.lr_scheduler_type != "cosine" or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        warmup = self.args.get_warmup_steps(num_training_steps)
        self.lr_scheduler = self.time_budget.cosine(optimizer or self.optimizer, warmup)
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The parser's loss. An evaluation batch padded to one size (masks of several sizes, see
        :class:`EvalSubset`) is scored a photo at a time, each against its own mask: scored whole, a smaller
        photo's prediction would be stretched over its padding."""
        labels = inputs["labels_hw"]
        if not model.training and (labels == PAD_INDEX).any():
            parts = [self.loss_and_outputs(model, pixels[None], labels_hw[None, :h, :w])
                     for pixels, labels_hw, (h, w) in zip(inputs["pixel_values"], labels, label_sizes(labels),
                                                          strict=True)]
            loss = torch.stack([part_loss for part_loss, _ in parts]).mean()
            outputs = {key: torch.cat([part[key] for _, part in parts]) for key in parts[0][1]}
        else:
            loss, outputs = self.loss_and_outputs(model, inputs["pixel_values"], labels)
        return (loss, outputs) if return_outputs else loss

    def loss_and_outputs(self, model, pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """``(loss, outputs)`` of one batch; ``self.model`` for its config: ``model`` may be a DDP wrapper."""
        weights = self.class_weights.to(labels.device) if self.class_weights is not None else None
        if self.matching == "hungarian":
            # the stock loss with ignore pixels left out (losses.hungarian_loss); every decoder layer supervised
            out = model(pixel_values=pixel_values, output_auxiliary_logits=True)
            loss = hungarian_loss(self.model, out, labels) + semantic_ce(
                out.class_queries_logits, out.masks_queries_logits, labels, weights)
        else:
            # every decoder layer's prediction is supervised
            deep = self.model.config.model_type == "mask2former"
            out = model(pixel_values=pixel_values, **({"output_auxiliary_logits": True} if deep else {}))
            predictions = [(out.class_queries_logits, out.masks_queries_logits)]
            predictions += [(a["class_queries_logits"], a["masks_queries_logits"]) for a in out.auxiliary_logits or []]
            loss = sum(fixed_assignment_loss(c, m, labels, weights, **self.loss_weights) for c, m in predictions)
        outputs = {"class_queries_logits": out.class_queries_logits, "masks_queries_logits": out.masks_queries_logits}
        return loss, outputs


def label_maps_for_metrics(logits, labels):
    """Keep only the predicted label maps (saves memory during evaluation), each at its own mask's size and
    padded as the masks are (:class:`EvalSubset`)."""
    class_logits, mask_logits = logits
    scores = semantic_scores(class_logits, mask_logits)
    maps = torch.full(labels.shape, IGNORE_INDEX, dtype=torch.uint8, device=labels.device)
    for i, (h, w) in enumerate(label_sizes(labels)):
        maps[i, :h, :w] = label_map(scores[i : i + 1], size=(h, w))[0]
    return maps


def metrics_fn(names):
    def compute(eval_pred) -> dict:
        cm = ConfusionMatrix(len(names))
        labels, predicted = np.asarray(eval_pred.label_ids), np.asarray(eval_pred.predictions)
        kept = labels != PAD_INDEX
        cm.update(labels[kept], predicted[kept])
        s = cm.scores(names)
        out = {"mean_f1_foreground": s["mean_f1_foreground"], "mean_iou": s["mean_iou"],
               "never_predicted": len(s["classes_never_predicted"])}
        out.update({f"f1_{n}": v["f1"] or 0.0 for n, v in s["per_class"].items() if v["pixels"]})
        return out
    return compute


class EvalHistory(TrainerCallback):
    """Appends each evaluation with wall-clock training time to ``eval_history.jsonl`` (kept across resumes)."""

    def __init__(self, path: Path):
        self.path, self.start = path, time.time()
        self.offset = 0.0
        if path.is_file():
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            self.offset = lines[-1]["elapsed_s"] if lines else 0.0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero:
            return
        row = {"epoch": state.epoch, "step": state.global_step,
               "elapsed_s": round(self.offset + time.time() - self.start, 1), **(metrics or {})}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def load_checkpoint(path: str) -> PreTrainedModel:
    """A checkpoint's model through ``from_pretrained``. The Trainer's own loaders (resume and best model,
    transformers 5.24) read the raw state dict and skip the decoder keys that checkpoints store under their
    legacy names (``fc1`` for ``mlp.fc1``): a resumed or reloaded MaskFormer would silently keep other
    weights there (the starting model's, or the last epoch's)."""
    return AutoModelForUniversalSegmentation.from_pretrained(path, use_safetensors=True, dtype=torch.float32)


def split_record(data_args: DataArguments, val_idx: list[int]) -> dict:
    """What ``split.json`` says was held out. Folders and hf: positions in the one dataset, drawn with the seed.
    CelebAMask-HQ and LaPa: their official splits, which no seed or count chooses; ``val_indices`` are positions
    in the official validation split, and the official test split, which training never opens, is not listed."""
    if data_args.dataset in OFFICIAL_SPLITS:
        return {"split": "official", "val_indices": val_idx}
    record = {"split_seed": data_args.split_seed, "val_indices": val_idx}
    if data_args.test_count:
        record["test_indices"] = open_dataset(data_args, part="test")[3]
    return record


def build_datasets(data_args: DataArguments, preprocess: PreprocessConfig):
    """Open the dataset, split it, fix reversed left/right masks, and wrap the parts for training and
    evaluation. Returns the datasets, class frequencies and a record of the split."""
    train_base, val_base, train_idx, val_idx = open_dataset(data_args)
    record = split_record(data_args, val_idx)
    if data_args.fix_lr_convention:
        train_base, val_base = fix_conventions(train_base, val_base, train_idx, val_idx)
        record["lr_reversed_fixed"] = sorted(train_base.reversed | val_base.reversed)
        print(f"left/right convention: swapped the labels of {len(record['lr_reversed_fixed'])} "
              f"reversed masks among {len(train_idx) + len(val_idx)} train+validation pairs "
              "(--fix_lr_convention false keeps them as they are)")
    freq, present = class_statistics(train_base, train_idx)
    augment = AugmentConfig(size=data_args.image_size, min_scale=data_args.min_scale,
                            max_scale=data_args.max_scale, max_rotate_deg=data_args.max_rotate_deg)
    rare_ids = train_base.labels.ids_of(RARE_CLASSES)
    has_rare = present[:, rare_ids].any(axis=1)
    paste = None
    if data_args.copy_paste > 0:
        donors = holding(train_idx, present, rare_ids)
        paste = CopyPaste(train_base, donors, data_args.copy_paste)
        print("copy-paste donors: " + ", ".join(f"{train_base.labels.names[c]} {len(found)}"
                                                 for c, found in donors.items()))
    train = TrainingSubset(train_base, oversample(train_idx, has_rare, data_args.rare_repeat), augment, preprocess,
                           paste=paste)
    val = EvalSubset(val_base, val_idx, preprocess)
    return train, val, freq, record


def local_path(value: str) -> bool:
    """Whether a model argument names a folder rather than a hub id (``owner/name``): it exists, is written as
    a path (absolute, ``./``, ``~``, more than two parts), or starts in a folder that is here (``runs/x``)."""
    path = Path(value)
    return (path.exists() or path.is_absolute() or value.startswith((".", "~")) or len(path.parts) > 2
            or (len(path.parts) == 2 and Path(path.parts[0]).is_dir()))


def check_model_folders(model_args: ModelArguments, train_args: TrainingArguments) -> None:
    """Refuse a missing folder before any data is read, naming its argument: loading it asked the Hugging Face
    hub for it as a model id (23 s of retries offline) and stopped with a hub error about something else."""
    init_from = model_args.init_from if model_args.init_from and local_path(model_args.init_from) else None
    resume = train_args.resume_from_checkpoint
    for argument, value in (("--init_from", init_from), ("--resume_from_checkpoint", resume)):
        if value and not Path(value).is_dir():
            sys.exit(f"{argument} {value}: no such folder")


def start_model(model_args: ModelArguments, labels) -> PreTrainedModel:
    """The model training starts from: ``--init_from`` (a folder, or a hub id with a network) or the preset."""
    if not model_args.init_from:
        return build_model(model_args.preset, labels, model_args.num_queries)
    try:
        return init_from_pretrained(model_args.init_from, labels)
    except (OSError, ValueError) as exc:  # a folder that holds no model, a hub id while offline
        sys.exit(f"--init_from {model_args.init_from}: {exc}")


def resume_checkpoint(train_args: TrainingArguments, out_dir: Path) -> str | bool | None:
    """``--resume_from_checkpoint PATH`` wins; otherwise the last checkpoint in ``--output_dir``, so
    that re-running the same command continues where the last run stopped (another day, another
    machine). Start afresh with a new ``--output_dir``."""
    if train_args.resume_from_checkpoint:
        return train_args.resume_from_checkpoint
    return get_last_checkpoint(str(out_dir)) if out_dir.is_dir() else None


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((DataArguments, ModelArguments, TrainingArguments))
    data_args, model_args, train_args = parser.parse_args_into_dataclasses(args=argv)
    train_args.remove_unused_columns = False
    train_args.label_names = ["labels_hw"]
    check_model_folders(model_args, train_args)
    preprocess = PreprocessConfig(size=data_args.image_size)
    try:
        train_ds, val_ds, freq, split_record = build_datasets(data_args, preprocess)
    except DatasetError as exc:
        sys.exit(f"dataset error: {exc}")
    labels = train_ds.base.labels
    model = start_model(model_args, labels)
    if model_args.init_backbone_from:
        try:
            init_backbone(model, model_args.init_backbone_from)
        except (OSError, ValueError) as exc:
            sys.exit(f"--init_backbone_from: {exc}")
    if model_args.deepen_to:
        try:
            model = deepen_backbone(model, [int(d) for d in model_args.deepen_to.split(",")])
        except ValueError as exc:
            sys.exit(f"--deepen_to {model_args.deepen_to}: {exc}")
    weights = balanced_class_weights(freq, model_args.class_weight_power) if model_args.class_weight_power else None
    out_dir = Path(train_args.output_dir)
    if train_args.process_index == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "split.json").write_text(json.dumps(split_record, indent=0))
        (out_dir / "run_args.json").write_text(json.dumps(
            {"data": asdict(data_args), "model": asdict(model_args), "training": train_args.to_dict()},
            indent=1, default=str))
    budget = TimeBudget(model_args.max_train_minutes) if model_args.max_train_minutes else None
    try:
        ema = WeightEma(model, model_args.ema_decay) if model_args.ema_decay else None
    except ValueError as exc:
        sys.exit(str(exc))
    trainer = ParserTrainer(
        model=model, args=train_args, train_dataset=train_ds, eval_dataset=val_ds, data_collator=collate,
        compute_metrics=metrics_fn(list(labels.names)), preprocess_logits_for_metrics=label_maps_for_metrics,
        callbacks=[EvalHistory(out_dir / "eval_history.jsonl")] + ([budget] if budget else []),
        matching=model_args.matching, class_weights=weights, semantic_dice_weight=model_args.semantic_dice_weight,
        semantic_lovasz_weight=model_args.semantic_lovasz_weight, time_budget=budget, ema=ema,
    )
    trainer.train(resume_from_checkpoint=resume_checkpoint(train_args, out_dir))
    metrics = trainer.evaluate()
    if not trainer.is_world_process_zero():  # under torchrun only rank 0 writes files and exports
        return metrics
    # the run folder itself becomes a loadable model folder (best model when load_best_model_at_end)
    save_model_folder(trainer.model, preprocess, out_dir, version=f"{out_dir.name}-final", fp16=False)
    if model_args.export_dir:
        from model_training.export import export_checkpoint

        command = " ".join(["python -m model_training.train", *(argv if argv is not None else sys.argv[1:])])
        export_checkpoint(str(out_dir), model_args.export_dir, data_args.image_size, data_args, [str(out_dir)],
                          command, fp16=model_args.export_fp16)
    return metrics


if __name__ == "__main__":
    main()
