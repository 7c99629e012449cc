"""Where the settings' defaults come from, in a checkout and in a regular install."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError
from uvicorn.config import LOG_LEVELS

from service.settings import REPO_ROOT, LogLevel, Settings

pytestmark = pytest.mark.slow


def test_requires_python_is_what_the_code_needs():
    """asyncio.timeout_at (service/middleware.py) and tomllib are Python 3.11."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    assert "asyncio.timeout_at(" in (REPO_ROOT / "service" / "middleware.py").read_text()


def test_checkout_default_is_the_shipped_model(monkeypatch):
    monkeypatch.delenv("FACEPARSE_MODEL_DIR", raising=False)
    assert Path(Settings().model_dir) == REPO_ROOT / "models" / "face-parser"


def pip(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "-q", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def test_a_regular_install_finds_the_shipped_model(tmp_path):
    """``pip install .`` (not editable) into a fresh venv: the default model folder is the installed copy."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    wheels = tmp_path / "wheels"
    pip(["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO_ROOT)])
    (wheel,) = wheels.glob("face_parser-*.whl")
    pip(["--python", str(python), "install", "--no-deps", str(wheel)])
    # The dependencies come from this interpreter's site-packages, after the new venv's own.
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    probe = ("import pathlib, sys, service.settings as s; "
             "print(pathlib.Path(s.__file__).is_relative_to(sys.prefix), s.Settings().model_dir)")
    run = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    imported_from_venv, model_dir = run.stdout.split()
    assert imported_from_venv == "True", "the test must import the installed copy, not the checkout"
    assert Path(model_dir) == env_dir / "share" / "face-parser" / "models" / "face-parser"
    assert (Path(model_dir) / "config.json").is_file() and (Path(model_dir) / "model.safetensors").is_file()


def test_tta_sizes_read_from_the_environment_as_comma_separated_pixels(monkeypatch):
    monkeypatch.setenv("FACEPARSE_TTA_SIZES", "448, 320,448")
    assert Settings(model_dir="unused").tta_sizes == [320, 448]
    monkeypatch.setenv("FACEPARSE_TTA_SIZES", "")
    assert Settings(model_dir="unused").tta_sizes == []


@pytest.mark.parametrize(("given", "message"), [("300", r"\[300\] are not multiples of 32"),
                                                ("2048", r"\[2048\] are not multiples of 32 from 32 to 1024"),
                                                ("320,big", "valid integer")])
def test_tta_sizes_that_no_model_can_take_are_refused_with_the_variable_named(monkeypatch, given, message):
    monkeypatch.setenv("FACEPARSE_TTA_SIZES", given)
    with pytest.raises(ValidationError, match=message):
        Settings(model_dir="unused")


@pytest.mark.parametrize("given", ["verbose", "trace", ""])
def test_a_log_level_that_the_server_cannot_start_with_is_refused_with_the_variable_named(monkeypatch, given):
    """trace: uvicorn knows it, but logging does not until uvicorn's config has run (after ours)."""
    monkeypatch.setenv("FACEPARSE_LOG_LEVEL", given)
    with pytest.raises(ValidationError, match="FACEPARSE_LOG_LEVEL"):
        Settings(model_dir="unused")


def test_the_log_level_is_read_in_any_case_and_both_logging_and_uvicorn_know_it(monkeypatch):
    monkeypatch.setenv("FACEPARSE_LOG_LEVEL", "WARNING")
    assert Settings(model_dir="unused").log_level == "warning"
    for level in get_args(LogLevel):
        assert level in LOG_LEVELS and isinstance(logging.getLevelName(level.upper()), int), level
