"""Every knob of the service, in one typed object read from ``FACEPARSE_*`` environment variables.

Built once through :func:`get_settings` (cached), never at import, so tests can
build their own :class:`Settings` and hand it to ``create_app``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "face-parser"


class Settings(BaseSettings):
    """Service configuration; each field is ``FACEPARSE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="FACEPARSE_", extra="ignore", protected_namespaces=())

    model_dir: str = Field(str(DEFAULT_MODEL_DIR), description="save_pretrained folder (or hub id when online)")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field("auto", description="auto: fp16 on CUDA, fp32 on CPU")
    torch_threads: int = Field(0, ge=0, description="CPU threads for forward passes, shared by the workers; 0 = all cores")
    inference_workers: int = Field(0, ge=0, le=64, description="forward passes at once; 0 = auto: one per core (at most "
                                   "4) on CPU, each using the cores the others leave idle; 1 on GPU")

    max_batch_size: int = Field(8, ge=1, le=256, description="most requests in one forward pass")
    max_batch_delay_ms: float = Field(5.0, ge=0, le=1000, description="wait after the first request for more; with "
                                      "several workers, only while none of the others is idle")
    max_queue_size: int = Field(64, ge=1, description="waiting requests beyond this get 503")
    request_timeout_s: float = Field(30.0, gt=0, description="a request queued longer gets 504")
    max_in_flight: int = Field(0, ge=0, description="photos admitted at once to /parse and /recolor, more get 503 "
                               "before upload and decoding; 0 = max_queue_size + max_batch_size")
    worker_threads: int = Field(8, ge=1, le=256, description="threads for decoding, post-processing and encoding")
    idle_trim_s: float = Field(2.0, ge=0, description="return freed heap to the OS this long after the last request; 0 = never")

    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="413 above this body size")
    max_image_pixels: int = Field(40_000_000, ge=1, description="413 above this width x height")
    max_output_side: int = Field(2048, ge=64, description="label maps of larger photos are computed at this side, then enlarged")

    face_detector: Literal["blazeface", "haar"] = Field("blazeface", description="blazeface: MediaPipe's landmark "
                                                        "detector (~11-13 ms a photo); haar: OpenCV's cascades (200-400 ms)")
    face_min_score: float = Field(0.5, gt=0, lt=1, description="blazeface: lowest face probability kept")
    face_min_size: float = Field(0.05, gt=0, le=1, description="haar: smallest face found / the photo's shorter side")
    face_detect_max_side: int = Field(800, ge=64, description="haar: faces are searched on the photo shrunk to this side")
    face_profile: bool = Field(True, description="haar: also search with the profile cascade (~2.5x the time)")
    face_align: bool = Field(False, description="parse each face a second time, framed by its parsed eyes and mouth "
                             "(a second forward pass; the detector's landmarks frame the first)")
    max_faces: int = Field(16, ge=1, le=256, description="most faces parsed per photo (the most confident ones)")

    api_key: SecretStr | None = Field(None, description="when set, required as Bearer token or X-API-Key")
    protect_ops_endpoints: bool = Field(False, description="also require the key on /healthz, /readyz, /metrics")
    log_level: str = Field("info", description="debug | info | warning | error")

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"FACEPARSE_DEVICE={self.device!r}: use auto, cpu, cuda or cuda:N")
        if self.api_key is not None and not self.api_key.get_secret_value():
            self.api_key = None  # an empty FACEPARSE_API_KEY means no key, not a key that nothing matches
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
