"""Baseline: the same model behind LitServe with its batching on (``pip install -e .[bench]``).

    python -m benchmarks.baselines.litserve_app --model models/face-parser --port 8002 \
        --max-batch-size 8 --batch-timeout-ms 5

LitServe runs decode, the batched forward and encode in one inference worker process, behind its
own API-server process. ``--batch-log`` appends each forward pass's batch size to a file, so that
the benchmark can report the mean batch size as it does for the service's ``/metrics``.
"""

from __future__ import annotations

import argparse

import litserve as ls
import numpy as np
from fastapi.responses import Response

from benchmarks.baselines import decode, encode, forward, warm_up
from face_parser.modeling import FaceParser


class FaceParserAPI(ls.LitAPI):
    """``POST /parse`` with a multipart ``image``; answers the class-id PNG."""

    def __init__(self, model_dir: str, batch_log: str | None, **kwargs):
        super().__init__(api_path="/parse", **kwargs)
        self.model_dir, self.batch_log = model_dir, batch_log

    def setup(self, device: str) -> None:
        self.parser = FaceParser.load(self.model_dir, device=device)
        warm_up(self.parser, self.max_batch_size)

    def decode_request(self, request) -> np.ndarray:
        return decode(request["image"].file.read())

    def batch(self, photos: list[np.ndarray]) -> list[np.ndarray]:
        return photos

    def predict(self, photos: list[np.ndarray]) -> list[tuple]:
        if self.batch_log:
            with open(self.batch_log, "a") as f:
                f.write(f"{len(photos)}\n")
        return list(zip(forward(self.parser, photos), photos, strict=True))

    def unbatch(self, outputs: list[tuple]) -> list[tuple]:
        return outputs

    def encode_response(self, output: tuple) -> Response:
        scores_khw, photo_hwc = output
        return Response(encode(self.parser, scores_khw, photo_hwc), media_type="image/png")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/face-parser")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8002)
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--batch-timeout-ms", type=float, default=5.0)
    ap.add_argument("--accelerator", default="auto", help="auto | cpu | cuda (LitServe picks the device)")
    ap.add_argument("--batch-log", default=None, help="append each forward pass's batch size to this file")
    args = ap.parse_args(argv)
    api = FaceParserAPI(args.model, args.batch_log, max_batch_size=args.max_batch_size,
                        batch_timeout=args.batch_timeout_ms / 1000.0)
    server = ls.LitServer(api, accelerator=args.accelerator, workers_per_device=1, timeout=30)
    server.run(host=args.host, port=args.port, num_api_servers=1, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
