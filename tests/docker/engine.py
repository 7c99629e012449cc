"""The Docker engine for the container tests: the repository's images built once per run, containers cleaned up.

The service image is built from the repository's Dockerfile as a user builds it. Where the public base image
or the PyTorch CPU index cannot be reached (a closed network), only the build arguments change:

* ``BASE_IMAGE``: Debian bookworm made by ``debootstrap`` from Debian's packages and imported into the engine
  (the host's CA bundle inside, so pip in the build reaches the package registry the host reaches). It is
  kept between runs as :data:`DEBOOTSTRAP_BASE`, a cache like the engine's layer cache.
* ``TORCH_CPU_INDEX``: a local index on loopback serving the torch CPU wheel (and its dependencies) that pip
  downloads to this machine (``torch==2.13.0+cpu``: never a CUDA build).

The build needs BuildKit (the Dockerfile's ``RUN --mount`` caches): ``docker build`` with the buildx plugin,
or a client that still carries BuildKit itself (Debian's docker.io, 20.10).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_BASE = "python:3.11-slim-bookworm"  # the Dockerfile's default BASE_IMAGE
PUBLIC_TORCH_INDEX = "https://download.pytorch.org/whl/cpu/torch/"
DEBOOTSTRAP_BASE = "face-parser-base:bookworm-debootstrap"
DEBOOTSTRAP_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "face-parser-images"
INDEX_PORT = 38611  # the local torch index's port when free (see serving())
# On every image and container the tests create: a killed run's leftovers are
# `docker ps -a --filter label=face-parser.test=1` (the tests remove their own as they finish).
TEST_LABEL = "face-parser.test=1"


class EngineUnavailable(Exception):
    """No engine or builder can be used here; the message says why (the tests skip with it)."""


def docker(*args: str, timeout: float = 120, check: bool = True, env: dict[str, str] | None = None,
           client: str = "docker") -> subprocess.CompletedProcess:
    """Run a docker CLI command; a failure raises with its output."""
    run = subprocess.run([client, *args], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    if check and run.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} exited {run.returncode}:\n"
                           f"{run.stdout[-3000:]}{run.stderr[-3000:]}")
    return run


@functools.cache
def engine_problem() -> str | None:
    """Why no engine answers here, or None when ``docker info`` works."""
    if not shutil.which("docker"):
        return "no docker client on PATH (bash scripts/install_container_tools.sh installs and starts one)"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "the Docker daemon did not answer `docker info` within 30 s"
    if info.returncode != 0:
        return f"no Docker daemon answers (bash scripts/install_container_tools.sh starts one): {info.stderr.strip()}"
    return None


@functools.cache
def buildkit_client() -> str:
    """A docker client whose ``docker build`` uses BuildKit: PATH's with buildx, else one with BuildKit built in."""
    candidates = dict.fromkeys(filter(None, [shutil.which("docker"), "/usr/bin/docker"]))
    for client in candidates:
        if not Path(client).exists():
            continue
        if docker("buildx", "version", client=client, check=False, timeout=30).returncode == 0:
            return client
        version = docker("version", "--format", "{{.Client.Version}}", client=client, check=False, timeout=30)
        major = version.stdout.strip().split(".")[0]
        if major.isdigit() and int(major) < 23:  # 23.0 moved BuildKit builds into the buildx plugin
            return client
    raise EngineUnavailable(f"no docker client can build with BuildKit (tried {', '.join(candidates)}): "
                            "install the buildx plugin or Debian's docker.io")


def image_exists(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False, timeout=30).returncode == 0


def pullable(ref: str) -> bool:
    """True when ``ref`` is here or can be pulled (a closed network says no at once, at name resolution)."""
    if image_exists(ref):
        return True
    try:
        return docker("pull", ref, check=False, timeout=180).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def reachable(url: str, timeout_s: float = 10) -> bool:
    import httpx

    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=timeout_s, follow_redirects=True).status_code == 200
    return False


def debootstrap_base() -> str:
    """:data:`DEBOOTSTRAP_BASE`, made once: debootstrap's minimal bookworm with Python, imported into the engine."""
    if image_exists(DEBOOTSTRAP_BASE):
        return DEBOOTSTRAP_BASE
    if not shutil.which("debootstrap"):
        raise EngineUnavailable("the public base image cannot be pulled and debootstrap is missing "
                                "(bash scripts/install_container_tools.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="face-parser-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run = subprocess.run(["debootstrap", "--variant=minbase", f"--include={DEBOOTSTRAP_PACKAGES}", "bookworm",
                              str(rootfs), "http://deb.debian.org/debian"],
                             capture_output=True, text=True, timeout=900)
        if run.returncode != 0:
            raise RuntimeError(f"debootstrap failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
        if HOST_CA_BUNDLE.is_file():  # the CAs this host trusts for the package registries
            shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
        for cache in ("var/cache/apt", "var/lib/apt/lists"):
            for path in (rootfs / cache).glob("*"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "--change", "CMD [\"python3\"]", "-", DEBOOTSTRAP_BASE],
                                  stdin=tar.stdout, capture_output=True, text=True, timeout=600)
        tar.wait(timeout=60)
        if imported.returncode != 0:
            raise RuntimeError(f"docker import failed: {imported.stderr}")
    return DEBOOTSTRAP_BASE


def torch_pin() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return next(d for d in project["dependencies"] if d.startswith("torch=="))


def local_wheels() -> Path:
    """The torch CPU wheel and its dependencies for the image's Python 3.11, downloaded by pip into the cache."""
    wheels = CACHE_DIR / "wheels"
    machine = platform.machine()
    platforms = [f"manylinux_2_28_{machine}", f"manylinux2014_{machine}"]
    run = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels), f"{torch_pin()}+cpu",
                          "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi",
                          "cp311", *(f"--platform={p}" for p in platforms)],
                         capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        raise EngineUnavailable(f"the PyTorch CPU index is unreachable and pip finds no {torch_pin()}+cpu wheel: "
                                f"{run.stderr.strip()[-1000:]}")
    return wheels


def write_index(wheels: Path, index: Path) -> None:
    """A PEP 503 simple index of ``wheels`` (a page per project linking its files)."""
    projects: dict[str, list[Path]] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        projects.setdefault(canonicalize_name(parse_wheel_filename(wheel.name)[0]), []).append(wheel)
    for name, files in projects.items():
        page = index / name
        page.mkdir(parents=True, exist_ok=True)
        for wheel in files:
            (page / wheel.name).symlink_to(wheel)
        (page / "index.html").write_text("".join(f'<a href="{w.name}">{w.name}</a>\n' for w in files))
    (index / "index.html").write_text("".join(f'<a href="{name}/">{name}</a>\n' for name in projects))


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    """``folder`` over HTTP on loopback (the build runs on the host network to reach it).

    On :data:`INDEX_PORT` when it is free: the URL is a build argument, and an unchanged one keeps the
    engine's layer cache valid from run to run.
    """
    handler = functools.partial(_QuietHandler, directory=str(folder))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", INDEX_PORT), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature
        pass


@dataclass
class Built:
    """An image the tests built: its tag, the build's wall time and the image's size."""

    tag: str
    build_s: float
    size_bytes: int
    build_args: dict[str, str]


def build(tag: str, context: Path = ROOT, dockerfile: str = "Dockerfile", build_args: dict[str, str] | None = None,
          timeout_s: float = 1500) -> Built:
    """``docker build`` on the host network (pip and apt in the build reach what the host reaches)."""
    client = buildkit_client()
    args = ["build", "--network", "host", "--progress", "plain", "--label", TEST_LABEL, "-t", tag,
            "-f", str(context / dockerfile)]
    for key, value in (build_args or {}).items():
        args += ["--build-arg", f"{key}={value}"]
    start = time.perf_counter()
    docker(*args, str(context), timeout=timeout_s, client=client, env={"DOCKER_BUILDKIT": "1"})
    seconds = time.perf_counter() - start
    size = int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
    return Built(tag, seconds, size, dict(build_args or {}))


@contextlib.contextmanager
def service_build_args() -> Iterator[dict[str, str]]:
    """Build arguments for the service image: none where the public base and index answer, else local ones."""
    args: dict[str, str] = {}
    if not pullable(PUBLIC_BASE):
        args["BASE_IMAGE"] = debootstrap_base()
    if reachable(PUBLIC_TORCH_INDEX):
        yield args
        return
    wheels = local_wheels()
    with tempfile.TemporaryDirectory(prefix="face-parser-index-") as tmp:
        write_index(wheels, Path(tmp))
        with serving(Path(tmp)) as url:
            yield {**args, "TORCH_CPU_INDEX": url}


def remove_image(tag: str) -> None:
    docker("image", "rm", "--force", tag, check=False, timeout=120)


@contextlib.contextmanager
def container(image: str, *run_args: str, command: tuple[str, ...] = ()) -> Iterator[str]:
    """A detached container (its id); always removed afterwards."""
    cid = docker("run", "--detach", "--label", TEST_LABEL, *run_args, image, *command, timeout=120).stdout.strip()
    try:
        yield cid
    finally:
        docker("rm", "--force", "--volumes", cid, check=False, timeout=120)


def inspect(cid: str, template: str) -> str:
    return docker("inspect", "--format", template, cid, timeout=30).stdout.strip()


def wait_healthy(cid: str, timeout_s: float) -> float:
    """Seconds until the engine reports the image's HEALTHCHECK healthy; fails with the log otherwise."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        state = inspect(cid, "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}")
        if state == "running healthy":
            return time.monotonic() - start
        if not state.startswith("running"):
            break
        time.sleep(1)
    logs = docker("logs", "--tail", "60", cid, check=False).stdout
    raise AssertionError(f"container {cid[:12]} not healthy after {time.monotonic() - start:.0f} s "
                         f"(state {state!r}); its log:\n{logs}")


def published_port(cid: str, port: int = 8000) -> int:
    line = docker("port", cid, f"{port}/tcp", timeout=30).stdout.splitlines()[0]
    return int(line.rsplit(":", 1)[1])
