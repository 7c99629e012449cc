"""Export a training checkpoint as the folder the service loads, with a model card.

    python -m model_training.export --checkpoint runs/small-256/checkpoint-3562 \
        --run_dir runs/small-256 --out models/face-parser --image_size 256

The folder is a stock Hugging Face model (config with ``id2label``,
``model.safetensors`` in fp16 by default, ``preprocessor_config.json``): no
project code is needed to load it. The held-out evaluation goes into the card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForUniversalSegmentation

from face_parser.modeling import FaceParser, save_model_folder
from face_parser.preprocess import PreprocessConfig
from model_training.evaluate import evaluate_parser, write_report

LICENCE_NOTE = (
    "Trained on CelebAMask-HQ images and masks, which are licensed for **non-commercial research and "
    "education only**; these weights carry the same restriction."
)


def read_history(history_file: Path) -> list[dict]:
    rows = [json.loads(line) for line in history_file.read_text().splitlines() if line.strip()]
    return [r for r in rows if "eval_mean_f1_foreground" in r]


def training_curve(history_files: list[Path], out_png: Path) -> None:
    """Validation mean F1 (eval mode) against epochs, one colour per training phase (run folder)
    with its wall-clock time in the legend; a phase that fine-tunes the previous one continues
    its epoch axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    offset = 0.0
    for path in history_files:
        rows = read_history(path)
        if not rows:
            continue
        epochs = [offset + r["epoch"] for r in rows]
        label = f"{path.parent.name} ({rows[-1]['elapsed_s'] / 60:.0f} min)"
        line, = ax.plot(epochs, [r["eval_mean_f1_foreground"] for r in rows], "o-", ms=3, label=f"mean F1, {label}")
        ax.plot(epochs, [r.get("eval_f1_u_lip", 0) for r in rows], ".--", lw=1, color=line.get_color(), alpha=0.5)
        offset = epochs[-1]
    ax.axhline(0.72, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("epoch (phases continue one another); dashed: F1 u_lip")
    ax.set_ylabel("validation F1 (eval mode)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def model_card(model, report: dict, command: str, version: str, size: int) -> str:
    params = sum(p.numel() for p in model.parameters())
    rows = "\n".join(
        f"| {n} | {v['f1'] if v['f1'] is not None else '-'} | {v['iou'] if v['iou'] is not None else '-'} | {v['pixels']} |"
        for n, v in report["per_class"].items()
    )
    return f"""---
library_name: transformers
pipeline_tag: image-segmentation
tags: [face-parsing, maskformer, celebamask-hq]
license: other
---
# {version}

A `MaskFormerForInstanceSegmentation` face parser for the 19 CelebAMask-HQ classes
(`config.id2label`). Stock Hugging Face folder: load it with
`AutoModelForUniversalSegmentation.from_pretrained(folder)` and
`AutoImageProcessor.from_pretrained(folder)`; `post_process_semantic_segmentation`
gives the label map.

## Architecture
- backbone: ResNet-18-like (`ResNetConfig`, basic blocks, depths 2-2-2-2), trained from scratch
- pixel decoder: FPN, {model.config.fpn_feature_size} channels; mask features {model.config.mask_feature_size}
- transformer decoder: DETR decoder, {model.config.decoder_config.decoder_layers} layers, d_model {model.config.decoder_config.d_model}, dropout 0
- queries: {model.config.num_queries} (one per class); parameters: {params / 1e6:.1f} M; input {size}x{size}; weights stored in float16

## Training
Data: 800 of the 900 pairs of a CelebAMask-HQ subset (512x512), 100 held out for validation.
{LICENCE_NOTE}

Recipe (`model_training/recipes/shipped.sh`: 26 epochs from scratch on 2 CPU cores, two GPU
fine-tunes of 6 and 3 minutes, their best checkpoints averaged): AdamW, cosine schedule, input {size} px, flip (with left/right class swap),
scale/rotate/translate and colour jitter, images holding rare classes (eyeglasses, hat,
earring, necklace) seen twice per epoch, class-balanced per-pixel loss. Query `k` is assigned to
class `k` during training (fixed matching instead of Hungarian matching) with mask BCE + dice
and a per-pixel cross-entropy on the post-processed class probabilities; this avoids the query
collapse seen with Hungarian matching and dropout when training MaskFormer from scratch on little
data. The loss is training-only: inference is stock MaskFormer.

```
{command}
```

## Evaluation (held-out 100 pairs, 512x512, eval mode)
Per-class F1 and IoU from TP/FP/FN summed over all pixels of the set.

- mean F1 over foreground classes: **{report['mean_f1_foreground']}**
- mean IoU: {report['mean_iou']}
- classes present but never predicted: {report['classes_never_predicted'] or 'none'}

| class | F1 | IoU | pixels |
|---|---|---|---|
{rows}
"""


def export_checkpoint(checkpoint: str, out_dir: str, image_size: int, data_args, run_dirs: list[str],
                      command: str, fp16: bool = True, version: str | None = None,
                      reports_dir: str = "reports/export") -> dict:
    """Checkpoint -> model folder + card + reports (JSON, charts, overlays: the overlays show
    dataset photos, so ``reports/`` is git-ignored)."""
    model = AutoModelForUniversalSegmentation.from_pretrained(checkpoint, use_safetensors=True, dtype=torch.float32)
    version = version or f"face-parser-small-{image_size}"
    out = save_model_folder(model, PreprocessConfig(size=image_size), out_dir, version=version, fp16=fp16)
    from model_training.datasets.loaders import open_dataset

    _, val_base, _, val_idx = open_dataset(data_args)
    parser = FaceParser.load(out, device="cpu", dtype="float32")
    report, triples = evaluate_parser(parser, val_base, val_idx)
    reports = Path(reports_dir)
    write_report(report, triples, parser.labels.palette(), reports, f"{version}: {len(val_idx)} held-out pairs")
    histories = [Path(d) / "eval_history.jsonl" for d in run_dirs if (Path(d) / "eval_history.jsonl").is_file()]
    if histories:
        training_curve(histories, reports / "training_curve.png")
    (out / "README.md").write_text(model_card(model, report, command, version, image_size))
    return report


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="Trainer checkpoint or save_pretrained folder")
    ap.add_argument("--out", default="models/face-parser")
    ap.add_argument("--run_dir", nargs="*", default=[], help="training run folders, in order (training curve)")
    ap.add_argument("--image_size", type=int, default=256)
    ap.add_argument("--dataset", default="folder")
    ap.add_argument("--data_dir", default="../shared/data/celebamask-mini")
    ap.add_argument("--val_count", type=int, default=100)
    ap.add_argument("--split_seed", type=int, default=0)
    ap.add_argument("--image_column", default="image")
    ap.add_argument("--label_column", default="label")
    ap.add_argument("--reports", default="reports/export", help="report.json, charts, overlays")
    ap.add_argument("--fp32", action="store_true", help="keep float32 weights")
    ap.add_argument("--version", default=None, help="model version (config.face_parser_version)")
    ap.add_argument("--command", default="bash model_training/recipes/small-256.sh", help="recorded in the card")
    args = ap.parse_args(argv)
    report = export_checkpoint(args.checkpoint, args.out, args.image_size, args, args.run_dir, args.command,
                               fp16=not args.fp32, version=args.version, reports_dir=args.reports)
    print(json.dumps({k: report[k] for k in ("mean_f1_foreground", "mean_iou", "classes_never_predicted")}))
    return report


if __name__ == "__main__":
    main()
