"""Every knob of the service, in one typed object read from ``FACEPARSE_*`` environment variables.

Built once through :func:`get_settings` (cached), never at import, so tests can
build their own :class:`Settings` and hand it to ``create_app``.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def shipped_model_dir() -> Path:
    """The shipped model: in the source tree (a checkout, an editable install), else where ``pip install .`` put it."""
    checkout = REPO_ROOT / "models" / "face-parser"
    installed = Path(sys.prefix) / "share" / "face-parser" / "models" / "face-parser"
    return checkout if (checkout / "config.json").is_file() or not installed.is_dir() else installed


DEFAULT_MODEL_DIR = shipped_model_dir()
# What both logging (server.configure_logging, which runs first) and uvicorn accept: not uvicorn's "trace",
# which logging learns only when uvicorn's own config has run.
LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class Settings(BaseSettings):
    """Service configuration; each field is ``FACEPARSE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="FACEPARSE_", extra="ignore", protected_namespaces=())

    model_dir: str = Field(str(DEFAULT_MODEL_DIR), description="save_pretrained folder (or hub id when online)")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="what forward passes compute in; auto: fp16 on CUDA, on a CPU bf16 where it has "
        "bf16 instructions (AVX512-BF16, AMX), else fp32")
    processes: int = Field(1, ge=1, le=64, description="service processes sharing the port (python -m service), "
                           "each with its own model, batcher and limits (every bound below is per process); "
                           "for a GPU, where one Python process cannot keep it busy")
    torch_threads: int = Field(
        0, ge=0, description="CPU threads for forward passes, shared by the workers; 0 = all cores (with several "
        "processes, each gets its share)")
    inference_workers: int = Field(0, ge=0, le=64, description="forward passes at once; 0 = auto: one per core "
                                   "(at most 4) on CPU, each using the cores the others leave idle; 1 on GPU")

    max_batch_size: int = Field(8, ge=1, le=256, description="most requests in one forward pass")
    max_batch_delay_ms: float = Field(5.0, ge=0, le=1000, description="wait after the first request for more; with "
                                      "several workers, only while none of the others is idle")
    max_queue_size: int = Field(64, ge=1, description="waiting requests beyond this get 503")
    request_timeout_s: float = Field(30.0, gt=0, description="a request queued longer gets 504")
    max_in_flight: int = Field(0, ge=0, description="uploaded photos admitted at once to /parse and /recolor, more get "
                               "503 before decoding; 0 = max_queue_size + max_batch_size")
    max_uploads: int = Field(64, ge=1, description="uploads to /parse and /recolor still arriving at once, counted "
                             "apart from the photos in flight; more get 503")
    max_connections: int = Field(512, ge=1, description="open connections (python -m service); more are answered "
                                 "503 and closed as they arrive")
    share_refusal_delay_s: float = Field(1.0, ge=0, le=30, description="a connection over its client's share gets "
                                         "its 429 this late (python -m service), so a client reconnecting as fast "
                                         "as it can is slowed to its sockets / this per second; at most "
                                         "max_connections wait at once, the rest are answered at once")
    client_share: float = Field(0.25, gt=0, le=1, description="most of each bound (connections, uploads, photos in "
                                "flight) one client may hold: its address, or its API key when keys are on; over "
                                "it, 429 + Retry-After. 1 = no share")
    keep_alive_timeout_s: int = Field(5, ge=1, description="a connection with no request under way is closed after "
                                      "this long, new ones included (uvicorn's timeout_keep_alive)")
    header_timeout_s: float = Field(20.0, gt=0, description="408 unless a request's headers arrive within this "
                                    "(from their first byte), plus 1 s per min_rate bytes received ...")
    header_timeout_max_s: float = Field(40.0, gt=0, description="... up to this (mod_reqtimeout header=20-40)")
    body_timeout_s: float = Field(20.0, gt=0, description="408 unless the upload arrives within this plus 1 s per "
                                  "min_rate bytes received (mod_reqtimeout body=20); request_timeout_s still bounds it")
    min_rate_bytes_s: float = Field(500.0, ge=0, description="the rate that earns headers and uploads more time "
                                    "(mod_reqtimeout MinRate=500); 0 = fixed deadlines")
    worker_threads: int = Field(8, ge=1, le=256, description="threads for decoding, post-processing and encoding")
    idle_trim_s: float = Field(
        2.0, ge=0, description="return freed heap to the OS this long after the last request; 0 = never")

    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="413 above this body size")
    max_image_pixels: int = Field(40_000_000, ge=1, description="413 above this width x height")
    max_output_side: int = Field(
        2048, ge=64, description="label maps of larger photos are computed at this side, then enlarged")

    face_detector: Literal["blazeface", "haar", "none"] = Field(
        "blazeface",
        description="blazeface: MediaPipe landmark detector, a second look at each face (~13-17 ms a photo); "
        "haar: OpenCV cascades (200-400 ms); none: no face finding, faces=auto is a 422 (a machine with "
        "neither runtime, such as a bare GPU image)")
    face_min_score: float = Field(0.5, gt=0, lt=1, description="blazeface: lowest face probability kept, the "
                                  "surest of its looks at a face (in the photo, then alone and upright); a face "
                                  "is kept only when its look alone sees a face there")
    face_min_size: float = Field(0.05, gt=0, le=1, description="haar: smallest face found / the photo's shorter side")
    face_detect_max_side: int = Field(800, ge=64,
                                      description="haar: faces are searched on the photo shrunk to this side")
    face_profile: bool = Field(True, description="haar: also search with the profile cascade (~2.5x the time)")
    flip: bool = Field(False, description="parse each photo also mirrored, in the same forward pass, and average "
                       "the two (test-time augmentation): +0.008 pooled mean F1 on the test split for twice the "
                       "model's work")
    tta_sizes: Annotated[list[int], NoDecode] = Field(
        [], description="also parse each photo at these input sizes (comma-separated px, multiples of 32) and "
        "average the log scores: test-time augmentation over scales, one more pass each (e.g. 320,448 beside v3's "
        "own 352; README, \"Test-time augmentation\")")
    face_align: bool = Field(False, description="parse each face a second time, framed by its parsed eyes and mouth "
                             "(a second forward pass; the detector's landmarks frame the first)")
    max_faces: int = Field(16, ge=1, le=256, description="most faces parsed per photo (the most confident ones)")

    live_max_streams: int = Field(16, ge=0, description="WS /recolor/live streams at once; more are closed with 1013")
    live_max_frame_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="a larger frame closes the stream (1009)")
    live_max_frame_pixels: int = Field(2_100_000, ge=1, description="a frame of more pixels closes the stream (1009)")
    live_idle_timeout_s: float = Field(30.0, gt=0, description="a stream silent this long is closed (1008)")
    live_send_timeout_s: float = Field(10.0, gt=0, description="a client that reads nothing for this long is closed")
    live_send_buffer_bytes: int = Field(256 * 1024, ge=4096, description="kernel send buffer of a live stream's "
                                        "socket: the unread answers a client that stops reading can hold before "
                                        "the send timeout starts (left to TCP autotuning, up to 4 MiB)")
    live_detect_every: int = Field(30, ge=1, description="frames between face searches while faces are tracked "
                                   "(a search costs a few frames' time; lost faces are searched at once)")
    live_stats_every_s: float = Field(1.0, gt=0, description="period of the stream's {fps, latency_ms, dropped}")

    api_key: SecretStr | None = Field(None, description="when set, required as Bearer token or X-API-Key")
    protect_ops_endpoints: bool = Field(False, description="also require the key on /healthz, /readyz, /metrics")
    log_level: LogLevel = Field("info", description="critical | error | warning | info | debug, in any case")

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_log_level(cls, value: object) -> object:
        """Any case, as logging and uvicorn take it; an unknown level fails here, naming the variable, not at start."""
        level = value.lower() if isinstance(value, str) else value
        if level not in get_args(LogLevel):
            raise ValueError(f"FACEPARSE_LOG_LEVEL={value!r}: use one of {', '.join(get_args(LogLevel))}")
        return level

    @field_validator("tta_sizes", mode="before")
    @classmethod
    def _sizes_from_text(cls, value: object) -> object:
        """``"320,448"`` (the environment's form) -> ``[320, 448]``; lists pass through."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("tta_sizes")
    @classmethod
    def _sizes_in_range(cls, sizes: list[int]) -> list[int]:
        wrong = [size for size in sizes if size % 32 or not 32 <= size <= 1024]
        if wrong:
            raise ValueError(f"FACEPARSE_TTA_SIZES: {wrong} are not multiples of 32 from 32 to 1024")
        return sorted(set(sizes))

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"FACEPARSE_DEVICE={self.device!r}: use auto, cpu, cuda or cuda:N")
        if self.api_key is not None and not self.api_key.get_secret_value():
            self.api_key = None  # an empty FACEPARSE_API_KEY means no key, not a key that nothing matches
        if self.header_timeout_max_s < self.header_timeout_s:
            raise ValueError(f"FACEPARSE_HEADER_TIMEOUT_MAX_S={self.header_timeout_max_s} is below "
                             f"FACEPARSE_HEADER_TIMEOUT_S={self.header_timeout_s}: the maximum must be at least "
                             "the start")
        if self.max_faces > self.max_queue_size:
            raise ValueError(f"FACEPARSE_MAX_FACES={self.max_faces} exceeds FACEPARSE_MAX_QUEUE_SIZE="
                             f"{self.max_queue_size}: a photo's faces are queued together, so raise the queue "
                             "size or lower max_faces")
        return self

    @property
    def in_flight_limit(self) -> int:
        return self.max_in_flight or self.max_queue_size + self.max_batch_size


@lru_cache
def get_settings() -> Settings:
    return Settings()
