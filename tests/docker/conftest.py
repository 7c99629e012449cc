"""Images for the container tests: built once per run, removed at its end, reported in the summary."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.docker import engine
from tests.docker.engine import Built

# Unique per run, so two runs on one engine never remove each other's images; the layer cache is shared.
RUN_TAG = f"test-{os.getpid()}"
BUILT: list[Built] = []


@pytest.fixture(scope="session")
def docker_engine() -> None:
    problem = engine.engine_problem()
    if problem:
        pytest.skip(problem)


def _built(tag: str, **build) -> Iterator[Built]:
    try:
        image = engine.build(tag, **build)
    except engine.EngineUnavailable as exc:
        pytest.skip(str(exc))
    BUILT.append(image)
    try:
        yield image
    finally:
        engine.remove_image(tag)


@pytest.fixture(scope="session")
def service_image(docker_engine) -> Iterator[Built]:
    """The repository's Dockerfile, as ``docker build .`` builds it (local base and torch index where needed)."""
    try:
        with engine.service_build_args() as build_args:
            yield from _built(f"face-parser:{RUN_TAG}", build_args=build_args)
    except engine.EngineUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def prometheus_image(docker_engine) -> Iterator[Built]:
    """docker/prometheus/Dockerfile: Prometheus from Debian's package, on the same base as the service."""
    build_args = {} if engine.pullable("debian:bookworm-slim") else {"BASE_IMAGE": engine.debootstrap_base()}
    yield from _built(f"face-parser-prometheus:{RUN_TAG}", context=engine.ROOT / "docker" / "prometheus",
                      build_args=build_args)


def pytest_terminal_summary(terminalreporter) -> None:
    for image in BUILT:
        args = " ".join(f"{k}={v}" for k, v in image.build_args.items()) or "defaults"
        terminalreporter.write_line(f"container image {image.tag}: {image.size_bytes / 1e9:.2f} GB, "
                                    f"built in {image.build_s:.0f} s (build args: {args})")
