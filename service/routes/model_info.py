"""What model is serving, with its labels and batching settings."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from face_parser.modeling import named_class_log_bias
from service.deps import EngineDep, SettingsDep, require_api_key

router = APIRouter(tags=["model"], dependencies=[Depends(require_api_key)])


@router.get("/v1/model", summary="Model version, labels, input size, device, dtype, batching")
async def model_info(engine: EngineDep, settings: SettingsDep) -> dict:
    parser = engine.parser
    palette = parser.labels.palette()
    return {
        "version": parser.version,
        "labels": [
            {"id": i, "name": n, "display_name": parser.labels.display_name(i), "color": palette[i].tolist()}
            for i, n in enumerate(parser.labels.names)
        ],
        "input_size": parser.preprocess.size,
        "device": str(parser.device),
        "dtype": str(parser.dtype).removeprefix("torch."),
        "test_time_augmentation": {"flip": settings.flip, "extra_sizes": settings.tta_sizes},
        "class_log_bias": named_class_log_bias(parser.labels, parser.class_log_bias),
        "batching": {
            "inference_workers": len(engine.workers.executors),
            "max_batch_size": settings.max_batch_size,
            "max_batch_delay_ms": settings.max_batch_delay_ms,
            "max_queue_size": settings.max_queue_size,
            "request_timeout_s": settings.request_timeout_s,
        },
    }
