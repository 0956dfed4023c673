"""The deployment files, checked offline: no Docker engine and no cluster run here.

Kubernetes manifests are validated against the Kubernetes OpenAPI schemas that
`kubernetes-validate` bundles, the compose file against the compose-spec schema vendored by
`check-jsonschema`, the Dockerfile with BuildKit's own parser (`dockerfile`), the nginx config
with `crossplane`. What no schema knows is checked against the code: every UNIROUTE_* variable
names a Settings field, probes and scrape paths are routes of the app, the image's build-time
warm-up runs, and every metric the Grafana dashboard and the Prometheus alerts query is one a
real gateway's /metrics exposes.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import dockerfile
import httpx
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from app.api.main import create_app
from app.cli.main import build_parser
from app.runtime.config import Settings
from app.runtime.metrics import Metrics
from app.runtime.workers import SHUTDOWN_S
from router_core.repset import load_repset
from router_core.shipped import ROUTERBENCH_REPSET
from tests.app.conftest import wait_ready
from tests.support.fault_upstream import FaultUpstream, closed_port
from tests.support.servers import serve
from tests.support.workers import serve_workers

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE = REPO / "docker-compose.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "uniroute.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
# The oldest and newest Kubernetes versions whose schemas kubernetes-validate bundles.
K8S_VERSIONS = (str(kubernetes_validate.utils.all_versions()[0]), kubernetes_validate.latest_version())
ADMIN = "deploy-test-admin-key"


def yaml_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomized() -> list[dict]:
    """The resources `kubectl apply -k deploy/kubernetes` creates."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in yaml_docs(K8S / name)]


def resource(kind: str, name: str) -> dict:
    found = [d for d in kustomized() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def app_paths() -> set[str]:
    """The gateway's routes, from its OpenAPI schema (building the app loads nothing: that happens
    at startup)."""
    return set(create_app(Settings()).openapi()["paths"])


def names_a_setting(var: str) -> bool:
    """Whether Settings reads the environment variable `var` (nested fields take `__`)."""
    if var == "UNIROUTE_CONFIG":  # the config file's path, read by Settings' sources
        return True
    if not var.startswith("UNIROUTE_"):
        return False
    model: type[BaseModel] | None = Settings
    for part in var.removeprefix("UNIROUTE_").lower().split("__"):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return True


def unknown_config_keys(data: dict, model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Keys of a config file that no Settings field takes (Settings ignores them silently)."""
    unknown = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            unknown.append(prefix + key)
        elif isinstance(value, dict) and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            unknown += unknown_config_keys(value, field.annotation, f"{prefix}{key}.")
    return unknown


# -- Kubernetes ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_kubernetes_manifest_is_valid_against_the_bundled_schemas(version):
    docs = kustomized() + yaml_docs(K8S / "secret.example.yaml")
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "Secret"}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_kubernetes_validation_rejects_a_misspelt_field():
    deployment = resource("Deployment", "uniroute")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_kustomization_applies_every_manifest_but_the_secret_example():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == on_disk


def test_gateway_probes_port_and_scrape_path_are_the_apps():
    pod = resource("Deployment", "uniroute")["spec"]["template"]
    (gateway,) = pod["spec"]["containers"]
    routes = app_paths()
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz", pod["metadata"]["annotations"]["prometheus.io/path"]} <= routes
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    (port,) = gateway["ports"]
    scraped_port = int(pod["metadata"]["annotations"]["prometheus.io/port"])
    assert port["containerPort"] == int(env["UNIROUTE_PORT"]) == scraped_port
    service = resource("Service", "uniroute")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert gateway["args"] == ["uniroute", "serve", "--host", "0.0.0.0"]
    build_parser().parse_args(gateway["args"][1:])  # a command `uniroute` accepts


def test_every_pod_runs_as_non_root_without_privileges_and_with_resources():
    uid_in_image = dockerfile_user()
    for deployment in [d for d in kustomized() if d["kind"] == "Deployment"]:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        for container in pod.get("initContainers", []) + pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), (container["name"], bound)
    gateway_pod = resource("Deployment", "uniroute")["spec"]["template"]["spec"]
    assert str(gateway_pod["securityContext"]["runAsUser"]) == uid_in_image


def test_selectors_pick_their_pods_and_the_autoscaler_scales_the_gateway():
    deployments = {d["metadata"]["name"]: d for d in kustomized() if d["kind"] == "Deployment"}
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        service = resource("Service", name)
        assert service["spec"]["selector"].items() <= labels.items()
        # The Services' selectors tell the gateway and Redis apart.
        others = [d for n, d in deployments.items() if n != name]
        assert not any(service["spec"]["selector"].items() <= o["spec"]["template"]["metadata"]["labels"].items()
                       for o in others)
    pdb = resource("PodDisruptionBudget", "uniroute")
    assert pdb["spec"]["selector"]["matchLabels"] == deployments["uniroute"]["spec"]["selector"]["matchLabels"]
    hpa = resource("HorizontalPodAutoscaler", "uniroute")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "uniroute"}
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_keys_come_from_the_secret_and_the_repository_holds_no_value():
    (gateway,) = resource("Deployment", "uniroute")["spec"]["template"]["spec"]["containers"]
    secret = yaml_docs(K8S / "secret.example.yaml")[0]
    for var in gateway["env"]:
        if "KEY" in var["name"]:
            assert "value" not in var, f"{var['name']} is written in the manifest"
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert set(secret["stringData"].values()) == {"REPLACE-ME"}
    config = yaml.safe_load(resource("ConfigMap", "uniroute-config")["data"]["config.yaml"])
    assert not {"admin_key", "api_keys"} & set(config)


def pod_settings(gateway: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings the gateway container starts with: its environment (stand-ins for the
    Secret's values), one worker per requested CPU, rounded up, as the downward API gives it
    (500m: 1), and the ConfigMap's config file."""
    for var in gateway["env"]:
        monkeypatch.setenv(var["name"], var.get("value", "from-the-secret"))
    requested = gateway["resources"]["requests"]["cpu"]
    monkeypatch.setenv("UNIROUTE_WORKERS", str(math.ceil(int(requested[:-1]) / 1000 if requested.endswith("m")
                                                          else float(requested))))
    (tmp_path / "config.yaml").write_text(resource("ConfigMap", "uniroute-config")["data"]["config.yaml"])
    monkeypatch.setenv("UNIROUTE_CONFIG", str(tmp_path / "config.yaml"))
    return Settings()


def test_configmap_config_and_pod_environment_make_valid_settings(tmp_path, monkeypatch):
    pod = resource("Deployment", "uniroute")["spec"]["template"]["spec"]
    (gateway,) = pod["containers"]
    config = resource("ConfigMap", "uniroute-config")["data"]["config.yaml"]
    assert unknown_config_keys(yaml.safe_load(config)) == []
    mounts = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}
    config_volume = next(v["name"] for v in pod["volumes"] if v.get("configMap", {}).get("name") == "uniroute-config")
    for var in gateway["env"]:
        assert names_a_setting(var["name"]) or not var["name"].startswith("UNIROUTE_"), var["name"]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    (workers,) = [e["valueFrom"]["resourceFieldRef"] for e in gateway["env"] if e["name"] == "UNIROUTE_WORKERS"]
    assert workers == {"resource": "requests.cpu", "divisor": "1"}
    assert Path(env["UNIROUTE_CONFIG"]).parent == Path(mounts[config_volume])
    settings = pod_settings(gateway, tmp_path, monkeypatch)
    assert settings.admin_key == "from-the-secret" and settings.api_keys == ["from-the-secret"]
    assert settings.workers == 1
    redis = urlsplit(settings.redis_url)
    service = resource("Service", "uniroute-redis")
    assert (redis.hostname, redis.port) == (service["metadata"]["name"], service["spec"]["ports"][0]["port"])
    # What the gateway writes lands on the writable volume (the root filesystem is read-only).
    for path in (settings.cache_dir, settings.sqlite_path):
        assert Path(path).is_relative_to(mounts["data"]), path


def test_a_stopping_pod_serves_until_the_service_drops_it_then_drains_within_its_grace_period(tmp_path,
                                                                                            monkeypatch):
    """Kubernetes sends SIGTERM as it takes the pod out of the Service's endpoints, and kube-proxy
    and ingress controllers learn of that seconds later: a gateway stopping at once would refuse
    the connections still sent to it meanwhile. The preStop hook waits that out; then the gateway
    drains (`drain_s`) and shuts down (workers' SHUTDOWN_S), all within the pod's grace period,
    after which the kubelet kills what is left (the shutdown undone, streams cut silently)."""
    pod = resource("Deployment", "uniroute")["spec"]["template"]["spec"]
    (gateway,) = pod["containers"]
    command = gateway["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command  # the image's coreutils (python:3.11-slim)
    pre_stop_s = float(command[1])
    assert pre_stop_s >= 3, "too short for the endpoints to be updated"
    settings = pod_settings(gateway, tmp_path, monkeypatch)
    assert pod["terminationGracePeriodSeconds"] > pre_stop_s + settings.drain_s + SHUTDOWN_S


# -- docker compose ------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def gateways() -> dict[str, dict]:
    return {name: s for name, s in compose()["services"].items() if name.startswith("gateway-")}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}`; a missing required VAR fails."""

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        if env.get(name):
            return env[name]
        assert op != ":?", f"compose requires {name}: {arg}"
        return arg if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def bind_mounts(service: dict) -> dict[str, Path]:
    """Container path -> repository path of a service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = REPO / source
    return out


def test_compose_file_is_valid_against_the_compose_spec():
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                             str(COMPOSE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_spec_validation_rejects_a_misspelt_key(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    healthcheck:\n      test: [\"CMD\", \"redis-cli\"",
                                                  "    healthchek:\n      test: [\"CMD\", \"redis-cli\"", 1))
    assert broken.read_text() != COMPOSE.read_text()
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                             str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "healthchek" in result.stdout


def test_compose_runs_redis_two_gateways_a_balancer_prometheus_and_grafana():
    services = compose()["services"]
    assert {"redis", "gateway-1", "gateway-2", "lb", "prometheus", "grafana"} <= set(services)
    assert len(gateways()) == 2
    for name, gateway in gateways().items():
        assert gateway["build"] == "." and (REPO / "Dockerfile").is_file()
        assert urlsplit(gateway["environment"]["UNIROUTE_REDIS_URL"]).hostname == "redis"
        assert gateway["environment"]["UNIROUTE_ADMIN_KEY"].startswith("${UNIROUTE_ADMIN_KEY:?")
        assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "/readyz" in " ".join(gateway["healthcheck"]["test"])
    assert "--appendonly" in services["redis"]["command"]
    assert {name: dep["condition"] for name, dep in services["lb"]["depends_on"].items()} == {
        name: "service_healthy" for name in gateways()}
    for name, service in services.items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name} mounts {source}, which the repository lacks"


def compose_settings(gateway: dict, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a compose gateway starts with (the admin key given in the shell)."""
    env = {var: interpolate(str(value), {"UNIROUTE_ADMIN_KEY": "from-the-shell"})
           for var, value in gateway["environment"].items()}
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("UNIROUTE_CONFIG", str(bind_mounts(gateway)[env["UNIROUTE_CONFIG"]]))
    return Settings()


def test_compose_gateway_environment_makes_valid_settings(monkeypatch):
    for name, gateway in gateways().items():
        for var in gateway["environment"]:
            assert names_a_setting(var) or not var.startswith("UNIROUTE_"), var
        config = bind_mounts(gateway)[gateway["environment"]["UNIROUTE_CONFIG"]]
        assert unknown_config_keys(yaml.safe_load(config.read_text())) == []
        settings = compose_settings(gateway, monkeypatch)
        assert settings.admin_key == "from-the-shell" and settings.api_keys == []
        assert settings.redis_url == "redis://redis:6379/0"


def test_compose_gives_a_stopping_gateway_time_to_drain_and_shut_down(monkeypatch):
    """`docker compose stop` / `down` kill a container 10 s after its SIGTERM unless it says
    otherwise: the gateway's drain and shutdown would be cut short."""
    for name, gateway in gateways().items():
        grace = re.fullmatch(r"(\d+)s", gateway["stop_grace_period"])
        assert grace is not None, gateway["stop_grace_period"]
        assert int(grace.group(1)) > compose_settings(gateway, monkeypatch).drain_s + SHUTDOWN_S, name


def test_nginx_balances_both_gateways_and_admits_the_gateways_body_limit():
    import crossplane
    from crossplane.analyzer import DIRECTIVES

    parsed = crossplane.parse(str(DEPLOY / "nginx" / "nginx.conf"), check_ctx=True, check_args=True)
    assert parsed["status"] == "ok", parsed["errors"]

    def directives(block: list[dict]):
        for d in block:
            yield d
            yield from directives(d.get("block", []))

    found = list(directives(parsed["config"][0]["parsed"]))
    assert [d["directive"] for d in found if d["directive"] not in DIRECTIVES] == []
    servers = {d["args"][0] for d in found if d["directive"] == "server" and d["args"]}
    assert servers == {f"{name}:{Settings().port}" for name in gateways()}
    (limit,) = [d["args"][0] for d in found if d["directive"] == "client_max_body_size"]
    assert int(limit.rstrip("m")) * 2**20 > Settings().max_body_bytes
    (listen,) = [d["args"][0] for d in found if d["directive"] == "listen"]
    assert f"8000:{listen}" in compose()["services"]["lb"]["ports"]


def test_prometheus_scrapes_each_gateway_and_loads_the_alerts():
    prometheus = compose()["services"]["prometheus"]
    mounted = bind_mounts(prometheus)
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] in app_paths()
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert targets == {f"{name}:{Settings().port}" for name in gateways()}
    # Rule files are relative to the config file's directory, which the container mounts from here.
    config_file = next(a for a in prometheus["command"] if a.startswith("--config.file=")).split("=", 1)[1]
    assert mounted[str(PurePosixPath(config_file).parent)] == DEPLOY / "prometheus"
    for rule_file in config["rule_files"]:
        assert not PurePosixPath(rule_file).is_absolute(), f"{rule_file}: promtool outside the container misses it"
        assert (DEPLOY / "prometheus" / rule_file).is_file()
    for rule in [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]:
        assert {"alert", "expr", "labels", "annotations"} <= set(rule)
    # Queries that pick the scrape job by name use this job's name.
    for expr in queries():
        assert set(re.findall(r'job="([^"]*)"', expr)) <= {job["job_name"]}


def test_grafana_provisions_the_datasource_the_dashboard_names():
    grafana = compose()["services"]["grafana"]
    mounted = bind_mounts(grafana)
    provisioning = mounted["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert urlsplit(datasource["url"]).hostname == "prometheus"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "uniroute.yml").read_text())["providers"]
    assert mounted[provider["options"]["path"]] == DASHBOARD.parent
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == \
        f"{provider['options']['path']}/{DASHBOARD.name}"
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == datasource["uid"] and panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == datasource["uid"] and t["expr"] for t in panel["targets"])
    titles = " | ".join(p["title"] for p in panels).lower()
    for topic in ("routing share by model", "overhead p50 / p99", "cost spent", "cost saved", "profiling jobs",
                  "budget: window spend vs target", "λ floor", "drift: far share", "unmet targets"):
        assert topic in titles


# -- Dockerfile ----------------------------------------------------------------------------


def final_stage() -> list[dockerfile.Command]:
    commands = dockerfile.parse_file(str(REPO / "Dockerfile"))
    last_from = max(i for i, c in enumerate(commands) if c.cmd == "FROM")
    return commands[last_from:]


def dockerfile_user() -> str:
    """The uid the image runs as (its final stage's last USER)."""
    return [c for c in final_stage() if c.cmd == "USER"][-1].value[0].split(":")[0]


def test_dockerfile_pins_cpu_torch_before_installing_the_project():
    commands = dockerfile.parse_file(str(REPO / "Dockerfile"))
    runs = [c.value[0] for c in commands if c.cmd == "RUN"]
    torch = next(i for i, r in enumerate(runs) if "torch==" in r)
    project = next(i for i, r in enumerate(runs) if re.search(r"pip install \.(\s|$)", r))
    assert torch < project
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs[torch]
    makefile_pin = re.search(r"^TORCH_SPEC \?= (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    assert makefile_pin == "torch==2.13.0"
    assert re.search(r"torch==[\w.+]+", runs[torch]).group(0) == makefile_pin
    # Everything the project's COPY lines name enters the build context.
    admitted = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.startswith("!")}
    copied = {src for c in commands if c.cmd == "COPY" and not c.flags for src in c.value[:-1]}
    assert copied <= admitted


def test_dockerfile_image_runs_non_root_offline_with_a_healthcheck():
    stage = final_stage()
    base = [c for c in dockerfile.parse_file(str(REPO / "Dockerfile")) if c.cmd == "ARG"][0].value[0]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim(-\w+)?", base) and stage[0].value == ("${PYTHON_IMAGE}",)
    assert dockerfile_user() not in ("root", "0")
    env = {}
    for c in stage:
        if c.cmd == "ENV":
            env.update(zip(c.value[::2], c.value[1::2]))
    assert env["HF_HUB_OFFLINE"] == "1"
    assert all(names_a_setting(var) for var in env if var.startswith("UNIROUTE_"))
    (healthcheck,) = [c for c in stage if c.cmd == "HEALTHCHECK"]
    assert "/healthz" in healthcheck.value[1]
    (cmd,) = [c for c in stage if c.cmd == "CMD"]
    assert cmd.json and list(cmd.value) == ["uniroute", "serve", "--host", "0.0.0.0"]
    build_parser().parse_args(list(cmd.value[1:]))


# -- the metrics the dashboard and the alerts query ----------------------------------------

# PromQL words that are not metric names.
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                 "offset", "inf", "nan"}


def queries() -> list[str]:
    """Every PromQL expression of the dashboard and the alert rules."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    return exprs


def metrics_and_labels(expr: str) -> tuple[set[str], set[str]]:
    """The metric names an expression selects and the label names it matches or groups by."""
    labels: set[str] = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        labels |= {name.strip() for name in group.split(",") if name.strip()}
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    names = set(re.findall(r"(?<![\w$.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)) - _PROMQL_WORDS
    return names, labels


def test_query_parsing_finds_metrics_and_labels():
    assert metrics_and_labels(
        'histogram_quantile(0.99, sum by (le, model) (rate(uniroute_upstream_seconds_bucket{route!="x"}[5m])))'
        ' / ignoring(model) group_left sum(up{job="uniroute"})'
    ) == ({"uniroute_upstream_seconds_bucket", "up"}, {"le", "model", "route", "job"})


@contextlib.contextmanager
def gateway(settings: dict, workers: int, tmp: Path) -> Iterator[str]:
    """A ready gateway with `settings`: one process (the app in this one), or `uniroute serve`
    with several workers, whose /metrics sums theirs."""
    if workers == 1:
        with serve(create_app(Settings(**settings))) as gw:
            wait_ready(gw)
            yield gw
        return
    (tmp / "config.yaml").write_text(yaml.safe_dump(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIROUTE_")}
    with serve_workers(env, tmp / "serve.log", workers, args=("--config", str(tmp / "config.yaml"))) as served:
        yield served.base


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-workers"])
def scraped(request, tmp_path_factory, shared_cache) -> str:
    """A real gateway's /metrics text after traffic that touches every family: a routed request
    whose first choice is refused (a failure, a fallback, a cooldown), a routed request answered
    at once, one whose budget target cannot be met (under the budget guard), and a profiling job.
    Served by one process, and by two workers (a scrape sums both)."""
    tmp = tmp_path_factory.mktemp("metrics-gateway")
    ids = [item.id for item in load_repset(ROUTERBENCH_REPSET).items]
    upstream = FaultUpstream()

    def scores(name: str, score: float) -> str:
        path = tmp / f"{name}.json"
        path.write_text(json.dumps({pid: score for pid in ids}))
        return str(path)

    with serve(upstream.app) as upstream_url:
        refused = f"http://127.0.0.1:{closed_port()}/v1"
        models = [
            # The most accurate model is the first choice, and refuses connections.
            {"name": "refused", "base_url": refused, "cost": {"per_request": 1.0}, "scores_file": scores("r", 0.95)},
            {"name": "steady", "base_url": upstream_url + "/v1", "cost": {"per_request": 0.1},
             "scores_file": scores("s", 0.6)},
        ]
        settings = {"sqlite_path": str(tmp / "registry.db"), "cache_dir": shared_cache, "admin_key": ADMIN,
                    "repset_path": str(ROUTERBENCH_REPSET), "state_dir": "routerbench-fast",
                    "models": models, "cooldown_failures": 1, "profile_concurrency": 16,
                    "budget": {"target": 1e6, "window_s": 3600}}
        with gateway(settings, request.param, tmp) as gw:
            chat = {"model": "uniroute:0", "messages": [{"role": "user", "content": "Which gas do plants take in?"}]}
            # The second is routed straight to `steady` once `refused` cools down (in the worker
            # that saw it fail: each worker keeps its own cooldowns).
            for _ in range(2):
                r = httpx.post(gw + "/v1/chat/completions", json=chat, timeout=30)
                assert r.status_code == 200 and r.headers["x-uniroute-model"] == "steady", r.text
            unmet = httpx.post(gw + "/v1/chat/completions", json={**chat, "model": "uniroute:budget=1e-12"}, timeout=30)
            assert unmet.status_code == 200, unmet.text
            auth = {"authorization": f"Bearer {ADMIN}"}
            # Slow answers: the job's progress series exist only while it runs, so the scrape kept
            # is the last one that caught them (a scrape can land just after the job ends).
            job = httpx.post(gw + "/admin/models", headers=auth, timeout=30, json={
                "name": "newcomer", "base_url": upstream_url + "/v1", "upstream_model": "newcomer:delay=0.05",
                "cost": {"per_request": 0.01}}).json()["job_id"]
            deadline = time.monotonic() + 120
            during: str | None = None
            while httpx.get(f"{gw}/admin/jobs/{job}", headers=auth, timeout=30).json()["state"] == "running":
                assert time.monotonic() < deadline, "the profiling job did not finish"
                text = httpx.get(gw + "/metrics", timeout=30).text
                if 'uniroute_profiling_prompts_done{model="newcomer"}' in text:
                    during = text
                time.sleep(0.1)
            assert during is not None, "no scrape caught the profiling job's progress"
            return during


@pytest.fixture(scope="module")
def exposed(scraped) -> dict[str, set[str]]:
    """Sample name -> its label names, as the scraped gateway exposes them."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(scraped):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def test_every_metric_the_dashboard_and_alerts_query_is_exposed_by_the_gateway(exposed):
    exprs = queries()
    assert len(exprs) >= 20
    # `up` is Prometheus' own, per scrape target; the others come from the gateway.
    prometheus_labels = {"job", "instance"}
    for expr in exprs:
        names, labels = metrics_and_labels(expr)
        assert names, expr
        missing = {n for n in names if n != "up" and n not in exposed}
        assert not missing, f"{expr!r} queries {missing}, which /metrics does not expose"
        known = prometheus_labels.union(*(exposed.get(n, set()) for n in names))
        assert labels <= known, f"{expr!r} uses labels {labels - known} that its metrics lack"


def family_of_sample() -> dict[str, str]:
    """Each sample name the gateway's metric families expose -> its family (`uniroute_cost_total`,
    `uniroute_upstream_seconds_bucket` -> `uniroute_cost`, `uniroute_upstream_seconds`)."""
    return {family.name + suffix: family.name for family in Metrics().registry.collect()
            for suffix in ("", "_total", "_bucket", "_sum", "_count")}


def left_off_on_purpose() -> dict[str, str]:
    """The metrics docs/deploy.md lists as on no panel and in no alert, with the reason it gives."""
    text = DEPLOY_DOC.read_text().split("left off on purpose:\n\n", 1)[1].split("\n\n", 1)[0]
    items = re.findall(r"^- `(\w+)(?:\{[^}]*\})?`: (.+?)(?=^- |\Z)", text, re.M | re.S)
    return {name: reason.strip() for name, reason in items}


def test_every_metric_family_is_on_the_dashboard_or_in_an_alert_or_left_off_with_a_reason():
    family = family_of_sample()
    queried = {family[n] for expr in queries() for n in metrics_and_labels(expr)[0] if n in family}
    off = left_off_on_purpose()
    assert off and all(off.values()), off
    assert set(off) <= set(family), f"docs/deploy.md leaves off metrics the gateway lacks: {set(off) - set(family)}"
    off_families = {family[n] for n in off}
    assert not off_families & queried, f"left off, yet queried: {off_families & queried}"
    unseen = set(family.values()) - queried - off_families
    assert not unseen, f"on no panel, in no alert, and not left off in docs/deploy.md: {sorted(unseen)}"


def test_no_percent_stacked_panel_sets_a_unit():
    """Grafana (8.4 on) formats a panel stacked to 100% only on its axis; its tooltip and legend
    show the raw values in the panel's unit: requests per second in `percentunit` read 1 req/s as
    100%. A share is computed in the query instead (see the routing share test below)."""
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        if defaults.get("custom", {}).get("stacking", {}).get("mode") == "percent":
            assert "unit" not in defaults, f"{panel['title']!r} stacks to percent and sets unit {defaults['unit']!r}"


def dashboard_panel(title: str) -> dict:
    (panel,) = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["title"] == title]
    return panel


def test_dockerfile_warm_up_runs_against_the_code(tmp_path, shared_cache):
    """The image build's warm-up step, run as the build runs it (its own process, the cache
    directory from the environment): it loads the model and fills the gateway's cache."""
    (warm,) = [c for c in final_stage() if c.cmd == "RUN" and c.heredocs]
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIROUTE_")}
    env.update(UNIROUTE_CACHE_DIR=shared_cache, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", warm.heredocs[0].content], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"representative prompts embedded into {shared_cache}" in result.stdout
    assert list(Path(shared_cache).glob("*.sqlite"))


# -- promtool, Prometheus' own checker (Debian's `prometheus` package; `make install` adds it) ----


@pytest.fixture(scope="module")
def promtool() -> str:
    """promtool's path; fails under CI=true when it is not installed, skips otherwise."""
    # On PATH, or unpacked into the venv by `make install`.
    path = shutil.which("promtool") or shutil.which("promtool", path=str(Path(sys.executable).parent))
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is not installed and CI=true (make install adds it where apt is available)")
        pytest.skip("promtool is not installed: apt-get install prometheus (or run `make install` as root)")
    return path


def run_promtool(promtool: str, *args: str, stdin: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=120)


def test_promtool_accepts_the_prometheus_config_from_any_directory(promtool, tmp_path):
    # From elsewhere than the repository, as an operator's CI would run it: the rule file is found.
    result = run_promtool(promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "alerts.yml" in result.stdout


def test_promtool_accepts_the_alert_rules(promtool):
    result = run_promtool(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_finds_no_problem_in_a_live_gateways_metrics(promtool, scraped):
    result = run_promtool(promtool, "check", "metrics", stdin=scraped)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_the_routing_share_panel_queries_each_models_share_of_the_routed_requests(promtool, tmp_path):
    """Evaluated by Prometheus' own engine (`promtool test rules`) on two models routed 1 and 3
    times a second: it shows 25% and 75%, not their rates."""
    panel = dashboard_panel("Routing share over time")
    assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit"
    (target,) = panel["targets"]
    series = [{"series": f'uniroute_routing_decisions_total{{model="{m}"}}', "values": f"0+{60 * n}x10"}
              for m, n in (("a", 1), ("b", 3))]
    check = {"promql_expr_test": [{"expr": target["expr"].replace("$__rate_interval", "5m"), "eval_time": "10m",
                                   "exp_samples": [{"labels": '{model="a"}', "value": 0.25},
                                                   {"labels": '{model="b"}', "value": 0.75}]}],
             "interval": "1m", "input_series": series}
    (tmp_path / "share.yml").write_text(yaml.safe_dump({"evaluation_interval": "1m", "tests": [check]}))
    result = run_promtool(promtool, "test", "rules", "share.yml", cwd=tmp_path)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_the_capture_alert_fires_on_the_first_prompt_lost(promtool, tmp_path):
    """Evaluated by `promtool test rules` on the alert rules as shipped: a reason's series exposed
    at 0 (as the gateway does from its start) then 1 fires the alert for that reason alone."""
    series = [{"series": 'uniroute_capture_lost_total{reason="store"}', "values": "0x4 1x5"},
              {"series": 'uniroute_capture_lost_total{reason="backlog"}', "values": "0x9"}]
    (rule,) = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
               if r["alert"] == "UnirouteCaptureLosingPrompts"]
    summary = rule["annotations"]["summary"].replace("{{ $value | humanize }}", "1").replace(
        "{{ $labels.reason }}", "store")
    check = {"interval": "1m", "input_series": series, "alert_rule_test": [
        {"eval_time": "4m", "alertname": rule["alert"], "exp_alerts": []},
        {"eval_time": "9m", "alertname": rule["alert"], "exp_alerts": [
            {"exp_labels": {"reason": "store", "severity": "warn"}, "exp_annotations": {"summary": summary}}]}]}
    (tmp_path / "capture.yml").write_text(yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m",
                                                          "tests": [check]}))
    result = run_promtool(promtool, "test", "rules", "capture.yml", cwd=tmp_path)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_promtool_check_metrics_reports_a_misnamed_metric(promtool):
    """The check above can fail: a gauge named like a counter is reported."""
    text = "# HELP bad_total not a counter\n# TYPE bad_total gauge\nbad_total 1\n"
    result = run_promtool(promtool, "check", "metrics", stdin=text)
    assert result.returncode != 0 and "bad_total" in result.stdout + result.stderr
