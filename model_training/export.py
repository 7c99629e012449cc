"""Export a training checkpoint as the folder the service loads, with a model card.

    python -m model_training.export --checkpoint runs/small-384 --run_dir runs/small-384 \
        --out models/face-parser --image_size 384 --test_count 100

The folder is a stock Hugging Face model (config with ``id2label``,
``model.safetensors`` in fp16 by default, ``preprocessor_config.json``): no
project code is needed to load it. The card is written from the run folders' own records
(arguments, split, history) and the held-out evaluation (the test split when there is one).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForUniversalSegmentation

from face_parser.modeling import FaceParser, save_model_folder
from face_parser.preprocess import PreprocessConfig
from model_training.curves import read_history, training_curve
from model_training.evaluate import HEADLINE, evaluate_parser, write_report

LICENCE_NOTE = (
    "Trained on CelebAMask-HQ images and masks, which are licensed for **non-commercial research and "
    "education only**; these weights carry the same restriction."
)


def describe_architecture(model) -> list[str]:
    """Bullet lines read from the model's own config (MaskFormer or Mask2Former)."""
    cfg = model.config
    bb = cfg.backbone_config
    depths = "-".join(map(str, getattr(bb, "depths", []) or []))
    widths = getattr(bb, "hidden_sizes", None) or getattr(bb, "embed_dim", "?")
    if cfg.model_type == "mask2former":
        pixel_decoder = (f"multi-scale deformable attention, {cfg.encoder_layers} layers, {cfg.feature_size} "
                         f"channels; mask features {cfg.mask_feature_size}")
        decoder = f"masked attention, {cfg.decoder_layers - 1} layers, hidden {cfg.hidden_dim}, dropout {cfg.dropout}"
    else:
        dec = cfg.decoder_config
        pixel_decoder = f"FPN, {cfg.fpn_feature_size} channels; mask features {cfg.mask_feature_size}"
        decoder = f"{dec.model_type} decoder, {dec.decoder_layers} layers, d_model {dec.d_model}, dropout {dec.dropout}"
    return [
        f"backbone: {bb.model_type} (depths {depths}, widths {widths})",
        f"pixel decoder: {pixel_decoder}",
        f"transformer decoder: {decoder}",
        f"queries: {cfg.num_queries}; parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M",
    ]


def describe_start(model_args: dict) -> str:
    """Where a run's weights started: a whole model, a trained backbone under a new decoder, or nothing."""
    if model_args.get("init_from"):
        deeper = f", its backbone deepened to {model_args['deepen_to']} blocks" if model_args.get("deepen_to") else ""
        return f"from {model_args['init_from']}{deeper}"
    if model_args.get("init_backbone_from"):
        return f"a new {model_args.get('preset')} around the backbone of {model_args['init_backbone_from']}"
    return f"from scratch ({model_args.get('preset')})"


def describe_run(run_dir: Path) -> str:
    """One line per training phase from the files the run wrote (``run_args.json``, ``split.json``,
    ``eval_history.jsonl``), so that any export describes its own run."""
    args = json.loads((run_dir / "run_args.json").read_text()) if (run_dir / "run_args.json").is_file() else {}
    split = json.loads((run_dir / "split.json").read_text()) if (run_dir / "split.json").is_file() else {}
    history = read_history(run_dir / "eval_history.jsonl") if (run_dir / "eval_history.jsonl").is_file() else []
    data, model, training = args.get("data", {}), args.get("model", {}), args.get("training", {})
    parts = [f"`{run_dir.name}`"]
    if model:
        parts.append(describe_start(model))
    if data and split.get("split") == "official":
        parts.append(f"input {data.get('image_size')} px, the dataset's official validation and test splits")
    elif data:
        parts.append(f"input {data.get('image_size')} px, test {data.get('test_count', 0)} / validation "
                     f"{data.get('val_count')} pairs held out (seed {data.get('split_seed')})")
    if "lr_reversed_fixed" in split:
        parts.append(f"{len(split['lr_reversed_fixed'])} left/right-reversed masks corrected")
    if training:
        clock = f" over {model['max_train_minutes']:g} minutes" if model.get("max_train_minutes") else ""
        parts.append(f"lr {training.get('learning_rate')} {training.get('lr_scheduler_type')}{clock}, batch "
                     f"{training.get('per_device_train_batch_size')}, semantic Dice "
                     f"{model.get('semantic_dice_weight', 0)}")
        if model.get("semantic_lovasz_weight"):
            parts.append(f"Lovász-softmax {model['semantic_lovasz_weight']}")
        if model.get("ema_decay"):
            parts.append(f"weights averaged (EMA, decay {model['ema_decay']}); the average was evaluated and exported")
    if history:
        best = max(r["eval_mean_f1_foreground"] for r in history)
        parts.append(f"{history[-1]['epoch']:.0f} epochs in {history[-1]['elapsed_s'] / 60:.0f} min, "
                     f"best validation mean F1 {best:.4f}")
    return "; ".join(parts)


def model_card(model, report: dict, command: str, version: str, size: int, run_dirs: list[Path],
               fp16: bool = True) -> str:
    rows = "\n".join(
        f"| {n} | {v['f1'] if v['f1'] is not None else '-'} | "
        f"{v['iou'] if v['iou'] is not None else '-'} | {v['pixels']} |"
        for n, v in report["per_class"].items()
    )
    arch = "\n".join(f"- {line}" for line in describe_architecture(model))
    phases = "\n".join(f"{i}. {describe_run(d)}" for i, d in enumerate(run_dirs, 1)) or "(no run folders given)"
    members = getattr(model.config, "face_parser_soup", None)
    if members:
        phases += (f"\n\nThe weights are the mean of {len(members)} models fine-tuned from one start (a model "
                   f"soup, `model_training.average`): {', '.join(f'`{m}`' for m in members)}.")
    f1_all = report.get("mean_f1_all")
    ci = report.get("ci95")
    intervals = ("- 95% intervals, the photos resampled with replacement 2000 times: per-image F "
                 f"{ci['per_image_f'][0]}-{ci['per_image_f'][1]}; pooled 18-class {ci['mean_f1_foreground'][0]}-"
                 f"{ci['mean_f1_foreground'][1]}; 19-class {ci['mean_f1_all'][0]}-{ci['mean_f1_all'][1]}\n"
                 if ci else "")
    return f"""---
library_name: transformers
pipeline_tag: image-segmentation
tags: [face-parsing, {model.config.model_type}, celebamask-hq]
license: other
---
# {version}

A `{type(model).__name__}` face parser for the 19 CelebAMask-HQ classes
(`config.id2label`). Stock Hugging Face folder: load it with
`AutoModelForUniversalSegmentation.from_pretrained(folder)` (on a CPU with `dtype=torch.float32`: the weights
are stored in float16) and `AutoImageProcessor.from_pretrained(folder)`; `post_process_semantic_segmentation`
gives the label map. The figures below resize the class scores in log space before the
argmax (`face_parser.postprocess.label_map`, as the service does); the stock post-processing
resizes the scores themselves, which scores lower on thin parts (eyes, brows, lips).

## Architecture
{arch}
- input {size}x{size}; weights stored in {"float16" if fp16 else "float32"}

## Training
{LICENCE_NOTE}

Phases, in order (read from each run folder):
{phases}

Query `k` is assigned to class `k` during training (fixed matching instead of Hungarian
matching) with mask BCE + dice, a per-pixel cross-entropy on the post-processed class
probabilities and, where listed, a soft Dice on them (a Mask2Former: on every decoder layer's
prediction). The loss is training-only: inference is stock {type(model).__name__}.

```
{command}
```

## Evaluation: {report.get("split", "val")} split, {report["images"]} pairs, 512x512, eval mode
- per-image F (mean over images of the F1 of the classes in each ground truth): **{report.get("per_image_f")}**
- pooled mean F1 over the 18 face classes: **{report['mean_f1_foreground']}**; over 19 with background: {f1_all}
- mean IoU: {report['mean_iou']}
{intervals}- classes present but never predicted: {report['classes_never_predicted'] or 'none'}
- left/right-reversed ground-truth masks corrected before scoring: {report.get("lr_convention_fixed", False)}

| class | F1 | IoU | pixels |
|---|---|---|---|
{rows}
"""


def saved_input_size(checkpoint: str) -> int | None:
    """The input size a folder's ``preprocessor_config.json`` records, or its run folder's (a Trainer
    checkpoint keeps none of its own); None when neither has one."""
    for folder in (Path(checkpoint), Path(checkpoint).parent):
        if (folder / "preprocessor_config.json").is_file():
            return PreprocessConfig.from_processor_dict(
                json.loads((folder / "preprocessor_config.json").read_text())).size
    return None


def input_size(checkpoints: list[str], given: int | None) -> int:
    """The input size to export with: ``given`` when set, else the one the checkpoints were saved with.

    Never a silent default: a 352 px model re-exported at 256 px would still load and parse, only worse.
    """
    saved = {c: saved_input_size(c) for c in checkpoints}
    if given is not None:
        for c, size in saved.items():
            if size is not None and size != given:
                print(f"note: {c} was saved at {size} px; exporting at --image_size {given}")
        return given
    sizes = set(saved.values())
    if len(sizes) != 1 or None in sizes:
        raise SystemExit(f"give --image_size: the input sizes saved with the checkpoints are {saved} "
                         "(None: no preprocessor_config.json in the folder or its run folder)")
    return sizes.pop()


def export_weights(checkpoint: str, out_dir: str, image_size: int, version: str, fp16: bool = True):
    """Checkpoint -> the loadable folder alone, no card: ``(model, folder)``."""
    model = AutoModelForUniversalSegmentation.from_pretrained(checkpoint, use_safetensors=True, dtype=torch.float32)
    return model, save_model_folder(model, PreprocessConfig(size=image_size), out_dir, version=version, fp16=fp16)


def export_checkpoint(checkpoint: str, out_dir: str, image_size: int, data_args, run_dirs: list[str],
                      command: str, fp16: bool = True, version: str | None = None,
                      reports_dir: str = "reports/export") -> dict:
    """Checkpoint -> model folder + card + reports (JSON, charts, overlays: the overlays show
    dataset photos, so ``reports/`` is git-ignored)."""
    version = version or f"face-parser-small-{image_size}"
    model, out = export_weights(checkpoint, out_dir, image_size, version, fp16)
    from model_training.datasets.loaders import open_dataset

    part = "test" if getattr(data_args, "test_count", 0) else "val"
    _, base, _, indices = open_dataset(data_args, part=part)
    parser = FaceParser.load(out, device="cpu", dtype="float32")
    report, triples = evaluate_parser(parser, base, indices)
    report.update({"split": part, "lr_convention_fixed": False})
    reports = Path(reports_dir)
    write_report(report, triples, parser.labels.palette(), reports, f"{version}: {part} split, {len(indices)} pairs")
    histories = [Path(d) / "eval_history.jsonl" for d in run_dirs if (Path(d) / "eval_history.jsonl").is_file()]
    if histories:
        training_curve(histories, reports / "training_curve.png")
    card = model_card(model, report, command, version, image_size, [Path(d) for d in run_dirs], fp16=fp16)
    (out / "README.md").write_text(card)
    return report


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="Trainer checkpoint or save_pretrained folder")
    ap.add_argument("--out", default="models/face-parser")
    ap.add_argument("--run_dir", nargs="*", default=[], help="training run folders, in order (training curve)")
    ap.add_argument("--image_size", type=int, default=None,
                    help="input size in px (default: the one saved with the checkpoint or its run folder)")
    ap.add_argument("--dataset", default="folder")
    ap.add_argument("--data_dir", default="../shared/data/celebamask-mini")
    ap.add_argument("--val_count", type=int, default=100)
    ap.add_argument("--test_count", type=int, default=0, help="when > 0 the card scores the test split")
    ap.add_argument("--split_seed", type=int, default=0)
    ap.add_argument("--image_column", default="image")
    ap.add_argument("--label_column", default="label")
    ap.add_argument("--reports", default="reports/export", help="report.json, charts, overlays")
    ap.add_argument("--fp32", action="store_true", help="keep float32 weights")
    ap.add_argument("--version", default=None, help="model version (config.face_parser_version)")
    ap.add_argument("--command", default="bash model_training/recipes/small-256.sh", help="recorded in the card")
    ap.add_argument("--weights_only", action="store_true", help="write the folder without the card and its "
                    "evaluation (on a machine without the evaluation photos; export again there for the card)")
    args = ap.parse_args(argv)
    args.image_size = input_size([args.checkpoint], args.image_size)
    if args.weights_only:
        export_weights(args.checkpoint, args.out, args.image_size, args.version or Path(args.out).name, not args.fp32)
        print(f"wrote {args.out} (no card)")
        return {}
    report = export_checkpoint(args.checkpoint, args.out, args.image_size, args, args.run_dir, args.command,
                               fp16=not args.fp32, version=args.version, reports_dir=args.reports)
    print(json.dumps({k: report[k] for k in HEADLINE}))
    return report


if __name__ == "__main__":
    main()
