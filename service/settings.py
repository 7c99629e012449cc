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
    torch_threads: int = Field(0, ge=0, description="intra-op threads on CPU; 0 = all cores")

    max_batch_size: int = Field(8, ge=1, le=256, description="most requests in one forward pass")
    max_batch_delay_ms: float = Field(5.0, ge=0, le=1000, description="wait after the first request for more")
    max_queue_size: int = Field(64, ge=1, description="waiting requests beyond this get 503")
    request_timeout_s: float = Field(30.0, gt=0, description="a request queued longer gets 504")

    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="413 above this body size")
    max_image_pixels: int = Field(40_000_000, ge=1, description="413 above this width x height")
    max_output_side: int = Field(2048, ge=64, description="label maps of larger photos are computed at this side, then enlarged")

    api_key: SecretStr | None = Field(None, description="when set, required as Bearer token or X-API-Key")
    protect_ops_endpoints: bool = Field(False, description="also require the key on /healthz, /readyz, /metrics")
    log_level: str = Field("info", description="debug | info | warning | error")

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"FACEPARSE_DEVICE={self.device!r}: use auto, cpu, cuda or cuda:N")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
