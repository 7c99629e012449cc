"""Average the weights of several fine-tuned runs of one model ("model soup").

Runs fine-tuned from the same starting point lie in one basin of the loss; the
mean of their weights is often better than each of them (Wortsman et al., 2022,
"Model soups"). The shipped model is the mean of two GPU fine-tunes.

    python -m model_training.average --checkpoints runs/a/checkpoint-3196 runs/b/checkpoint-2312 \
        --out runs/soup

The soup's input size is the one its members were saved with (``--image_size`` to choose another).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoModelForUniversalSegmentation, PreTrainedModel

from face_parser.modeling import save_model_folder, without_calibration
from face_parser.preprocess import PreprocessConfig
from model_training.export import input_size


def load_float32(folder: str) -> PreTrainedModel:
    return AutoModelForUniversalSegmentation.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)


def average_models(folders: list[str]) -> PreTrainedModel:
    """Mean of the floating-point weights; integer buffers are taken from the first model."""
    if len(folders) < 2:
        raise ValueError("give at least two checkpoints to average")
    soup = load_float32(folders[0])
    total = {k: v.clone() for k, v in soup.state_dict().items()}
    for folder in folders[1:]:
        state = load_float32(folder).state_dict()
        if state.keys() != total.keys() or any(v.shape != total[k].shape for k, v in state.items()):
            raise ValueError(f"{folder}: not the same architecture as {folders[0]}")
        for k, v in state.items():
            if v.is_floating_point():
                total[k] += v
    soup.load_state_dict({k: v / len(folders) if v.is_floating_point() else v for k, v in total.items()})
    soup.config.face_parser_soup = list(folders)  # the export's card names them
    return without_calibration(soup)  # biases fitted to one member's weights do not fit the mean


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoints", nargs="+", required=True, help="Trainer checkpoints or model folders")
    ap.add_argument("--out", required=True)
    ap.add_argument("--image_size", type=int, default=None, help="default: the size the checkpoints were saved at")
    args = ap.parse_args(argv)
    missing = [c for c in args.checkpoints if not Path(c).is_dir()]
    if missing or len(args.checkpoints) < 2:
        ap.error(f"--checkpoints: no such folder: {', '.join(missing)}" if missing else
                 "--checkpoints: give at least two folders to average")
    size = input_size(args.checkpoints, args.image_size)
    soup = average_models(args.checkpoints)
    save_model_folder(soup, PreprocessConfig(size=size), args.out, version="soup", fp16=False)
    print(f"averaged {len(args.checkpoints)} checkpoints -> {args.out}")


if __name__ == "__main__":
    main()
