"""CPU cost of faces=auto's steps around the forward pass, on one thread: face finding and paste-back.

    python -m benchmarks.face_speed [--repeats 30]

Photos: the public-domain astronaut (``skimage.data.astronaut``, 512 x 512) and the
same photo on a 1024 x 768 canvas. Face finding (:func:`~face_parser.faces.find_faces`: detection, BlazeFace's
second look at each face, the crops): BlazeFace (the default) and the Haar cascades
(``FACEPARSE_FACE_DETECTOR=haar``, profile on). Paste-back: the
label map of the 512 px photo from the model's scores for its face crop, as
``/parse`` computes it (the forward pass is not timed).
Medians of ``--repeats`` calls, wall and CPU time of the calling thread; OpenCV,
TFLite and torch limited to one thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import cv2
import numpy as np
import torch

from face_parser.detectors import BlazeFaceDetector, HaarFaceDetector
from face_parser.faces import find_faces
from face_parser.modeling import FaceParser
from face_parser.paste import face_label_map
from face_parser.pipeline import FacePipeline


def median_ms(fn, repeats: int) -> dict[str, float]:
    """Median wall time and median CPU time of this thread per call, in ms. On a shared machine the CPU
    time is the steadier figure: it is what one core spends, however long the core was taken away."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    return {"wall": round(statistics.median(wall) * 1000, 2), "cpu": round(statistics.median(cpu) * 1000, 2)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--model", default="models/face-parser")
    args = ap.parse_args(argv)
    from skimage import data

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    small = data.astronaut()
    large = np.full((768, 1024, 3), 120, np.uint8)
    large[128:640, 256:768] = small
    detectors = {"blazeface": BlazeFaceDetector(), "haar": HaarFaceDetector(profile=True)}
    results: dict = {"detect_ms": {name: {f"{p.shape[1]}x{p.shape[0]}": median_ms(lambda d=det, p=p: find_faces(p, d),
                                                                                  args.repeats)
                                          for p in (small, large)} for name, det in detectors.items()}}
    parser = FaceParser.load(args.model, device="cpu")
    pipeline = FacePipeline(detectors["blazeface"], parser.preprocess.size, parser.labels)
    parsing = pipeline.run(small, parser.score_images)
    (face,), scores = parsing.faces, parsing.scores[0]
    results["label_map_512_ms"] = median_ms(lambda: face_label_map([scores], [face.crop], small.shape[:2]),
                                            args.repeats)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
