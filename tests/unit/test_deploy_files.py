"""The platform deployment files: Kubernetes (deploy/k8s), Railway and Render.

The Kubernetes manifests are rendered for each environment by the real
scripts/render-k8s.sh (envsubst) and every rendered object is validated by
kubernetes-validate, strictly (unknown fields fail), against the API schemas of the oldest
Kubernetes release they claim (1.31: the first with the preStop sleep action on by
default) and the newest the validator knows. Railway and Render publish their JSON schemas
only online, so railway.json and render.yaml are held to the fields their references
document (Railway's "Config as Code" reference, Render's "Blueprint YAML Reference").
Each file is also held to the app's contract: the commands are the CLI's, the ports,
probes, uid and shutdown timings are the image's and config/settings.py's.
"""

from __future__ import annotations

import base64
import json
import math
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from config import ConfigError, Settings, load_settings
from config.settings import variables
from tests.unit import test_container_files
from tests.unit.test_container_files import (
    REAL_ORIGINS,
    cli_command,
    console_scripts,
    dockerfile_stages,
    env_file_assignments,
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
RENDER_K8S = ROOT / "scripts" / "render-k8s.sh"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
RAILWAY = ROOT / "railway.json"
RENDER = ROOT / "render.yaml"

ENVIRONMENTS = ("staging", "production")
IMAGE = "ghcr.io/owner/coinlink:sha-0123456789abcdef"
OLDEST_KUBERNETES = "1.31"
KUBERNETES_VERSIONS = (OLDEST_KUBERNETES, kubernetes_validate.latest_version())
APPLY_ORDER = ("namespace.yaml", "config/", "migrate/", "app/")
LIVENESS, READINESS = "/health", "/readyz"
PORT = Settings.model_fields["port"].default
BUDGET_S = Settings.model_fields["shutdown"].default.budget_s
SECRETS = {
    "COINLINK_DATABASE_URL": "postgres://coinlink:Kq2wX9vB4nR7@postgres.internal:5432/coinlink",
    "COINLINK_REDIS_URL": "redis://redis.internal:6379/0",
    "COINLINK_JWT_SECRET": "Zq8vN3tR6yB1mK4pX7cW2eH5jL9sD0fG",
}
REQUIRED_SECRETS = tuple(SECRETS)
# No COINLINK_* variable of the suite's and no stray .env: settings as a pod reads them.
clean_env = test_container_files.clean_env


# --- rendering ----------------------------------------------------------------------------


def render_k8s(environment: str, image: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(RENDER_K8S), environment, image, str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass(frozen=True)
class Rendered:
    """One environment's rendered manifests: relative path → its objects."""

    environment: str
    values: dict[str, str]
    files: dict[str, list[dict[str, Any]]]

    def objects(self) -> Iterator[dict[str, Any]]:
        for documents in self.files.values():
            yield from documents

    def one(self, kind: str, name: str = "coinlink") -> dict[str, Any]:
        found = [o for o in self.objects() if o["kind"] == kind and o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def path_of(self, kind: str, name: str = "coinlink") -> str:
        return next(
            path
            for path, objects in self.files.items()
            for o in objects
            if o["kind"] == kind and o["metadata"]["name"] == name
        )


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    out = tmp_path_factory.mktemp(request.param) / "k8s"
    result = render_k8s(request.param, IMAGE, out)
    assert result.returncode == 0, result.stderr
    files = {
        path.relative_to(out).as_posix(): [o for o in yaml.safe_load_all(path.read_text()) if o]
        for path in sorted(out.rglob("*.yaml"))
    }
    values = env_file_assignments(K8S / f"{request.param}.env")
    return Rendered(request.param, values, files)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, "one container per pod"
    return containers[0]  # type: ignore[no-any-return]


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def image_uid_gid() -> tuple[int, int]:
    user = [i.args for i in dockerfile_stages()[-1] if i.keyword == "USER"][-1]
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


def load_pod_settings(
    monkeypatch: pytest.MonkeyPatch, rendered: Rendered, secret: dict[str, str]
) -> Settings:
    """The settings a server pod starts with: ConfigMap, then Secret, then its own env."""
    container = only_container(rendered.one("Deployment"))
    environment = {
        **rendered.one("ConfigMap")["data"],
        **secret,
        **{item["name"]: item["value"] for item in container.get("env", [])},
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return load_settings()


# --- Kubernetes: the render step and the validator ----------------------------------------


def test_render_writes_every_manifest_in_apply_order(rendered: Rendered) -> None:
    templates = sorted(
        p.relative_to(K8S).as_posix()
        for p in K8S.rglob("*.yaml")
        if p.parent != K8S or p.name == "namespace.yaml"
    )
    assert sorted(rendered.files) == templates
    assert all(path.startswith(APPLY_ORDER) for path in rendered.files)
    assert rendered.path_of("Namespace", rendered.values["NAMESPACE"]) == "namespace.yaml"
    assert rendered.path_of("Job", "coinlink-migrate").startswith("migrate/")
    assert rendered.path_of("Deployment").startswith("app/")
    # The Job reads these, so they exist before it runs.
    for kind in ("ConfigMap", "ServiceAccount", "NetworkPolicy"):
        assert rendered.path_of(kind).startswith("config/"), kind


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_passes_kubernetes_validate(rendered: Rendered, version: str) -> None:
    objects = list(rendered.objects())
    assert len(objects) >= 10
    for manifest in objects:
        kubernetes_validate.validate(manifest, version, strict=True)
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == rendered.values["NAMESPACE"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_secret_template_passes_kubernetes_validate(version: str) -> None:
    (secret,) = [o for o in yaml.safe_load_all(SECRET_EXAMPLE.read_text()) if o]
    kubernetes_validate.validate(secret, version, strict=True)


def test_the_validator_refuses_what_the_cluster_would(rendered: Rendered) -> None:
    deployment = rendered.one("Deployment")
    # A misspelt field: strict validation fails where a lenient one would drop it.
    misspelt = json.loads(json.dumps(deployment))
    misspelt["spec"]["template"]["spec"]["terminationGracePeriod"] = 15
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, OLDEST_KUBERNETES, strict=True)
    # The preStop sleep action is why 1.31 is the oldest release these manifests support.
    with pytest.raises(kubernetes_validate.ValidationError, match="sleep"):
        kubernetes_validate.validate(deployment, "1.28", strict=True)


def test_render_refuses_mutable_images_and_unknown_environments(tmp_path: Path) -> None:
    for environment, image in (
        ("production", "ghcr.io/owner/coinlink:latest"),
        ("production", "ghcr.io/owner/coinlink"),
        ("production", "ghcr.io/owner/coinlink:sha-1\nkind: Pod"),
        ("nowhere", IMAGE),
    ):
        result = render_k8s(environment, image, tmp_path / "out")
        assert result.returncode == 2, (environment, image, result.stdout)
        assert result.stderr.startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_render_refuses_a_directory_with_older_manifests(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "removed.yaml").write_text("kind: ConfigMap\n")
    result = render_k8s("staging", IMAGE, tmp_path)
    assert result.returncode == 2
    assert "not empty" in result.stderr


def test_environments_set_the_same_variables() -> None:
    names = {env: set(env_file_assignments(K8S / f"{env}.env")) for env in ENVIRONMENTS}
    assert names["staging"] == names["production"]


# --- Kubernetes: the contract with the image and the settings -----------------------------


def test_shutdown_fits_the_grace_period(rendered: Rendered, clean_env: pytest.MonkeyPatch) -> None:
    deployment = rendered.one("Deployment")
    container = only_container(deployment)
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    settings = load_pod_settings(clean_env, rendered, SECRETS)
    # preStop lets routing catch up; the server's own drain then closes kept-alive
    # connections, short, since nothing routes new ones to it any more.
    assert 0 < settings.shutdown.drain_s <= 3
    assert pre_stop >= 3, "kube-proxy and the ingress controller need seconds to forget a pod"
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + settings.shutdown.budget_s + 1
    assert grace <= pre_stop + settings.shutdown.budget_s + 10, "a stuck pod lingers"


def test_probes_split_liveness_from_readiness(rendered: Rendered) -> None:
    container = only_container(rendered.one("Deployment"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": PORT}
    probes = {
        name: container[name]["httpGet"]
        for name in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["startupProbe"]["path"] == LIVENESS
    assert probes["livenessProbe"]["path"] == LIVENESS, "an outage must not restart pods"
    assert probes["readinessProbe"]["path"] == READINESS
    assert {probe["port"] for probe in probes.values()} == {"http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30, "time to start"
    for name in ("livenessProbe", "readinessProbe"):
        assert container[name]["timeoutSeconds"] < container[name]["periodSeconds"]


@pytest.mark.parametrize(
    ("kind", "name"), [("Deployment", "coinlink"), ("Job", "coinlink-migrate")]
)
def test_pods_run_as_the_image_user_with_nothing_extra(
    rendered: Rendered, kind: str, name: str
) -> None:
    workload = rendered.one(kind, name)
    spec = pod_spec(workload)
    uid, gid = image_uid_gid()
    context = spec["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid) == (10001, 10001)
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "coinlink"
    container = only_container(workload)
    assert container["image"] == IMAGE
    own = container["securityContext"]
    assert own["allowPrivilegeEscalation"] is False
    assert own["readOnlyRootFilesystem"] is True
    assert own["capabilities"] == {"drop": ["ALL"]}
    assert not own.get("privileged", False)
    # Prometheus' multi-process files need a writable /tmp; nothing else is.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert list(mounts) == ["/tmp"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    for kind_of in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind_of])
    account = rendered.one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    namespace = rendered.one("Namespace", rendered.values["NAMESPACE"])
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_server_runs_the_image_command_and_the_job_migrates(rendered: Rendered) -> None:
    server = only_container(rendered.one("Deployment"))
    assert "command" not in server and "args" not in server, "the image's CMD serves"
    job = rendered.one("Job", "coinlink-migrate")
    migrate = only_container(job)
    script, *argv = migrate["command"]
    assert console_scripts().get(script) == "coinlink.cli:main"
    assert cli_command(argv) == "cmd_migrate"
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert migrate["envFrom"] == server["envFrom"], "the Job migrates the servers' database"
    assert {
        source.get("configMapRef", source.get("secretRef"))["name"] for source in server["envFrom"]
    } == {
        rendered.one("ConfigMap")["metadata"]["name"],
        "coinlink",
    }


def test_config_and_secret_make_a_production_configuration(
    rendered: Rendered, clean_env: pytest.MonkeyPatch
) -> None:
    settings = load_pod_settings(clean_env, rendered, SECRETS)
    assert settings.is_production
    assert settings.port == PORT
    assert settings.effective_auto_migrate is False, "the Job owns migrations"
    assert settings.trusted_proxies == [rendered.values["TRUSTED_PROXIES"]]
    assert settings.cors_origins == rendered.values["CORS_ORIGINS"].split(",")
    # One worker per CPU of the limit: the default would count the node's cores.
    container = only_container(rendered.one("Deployment"))
    assert settings.workers == max(
        1, math.floor(cpu_cores(container["resources"]["limits"]["cpu"]))
    )
    config = rendered.one("ConfigMap")["data"]
    assert not set(config) & set(REQUIRED_SECRETS), "secrets belong in the Secret"
    assert set(config) <= set(variables())


def test_secret_template_carries_no_value_and_is_refused(
    rendered: Rendered, clean_env: pytest.MonkeyPatch
) -> None:
    (secret,) = [o for o in yaml.safe_load_all(SECRET_EXAMPLE.read_text()) if o]
    assert "data" not in secret
    assert secret["stringData"] == dict.fromkeys(REQUIRED_SECRETS, "")
    with pytest.raises(ConfigError) as caught:
        load_pod_settings(clean_env, rendered, secret["stringData"])
    named = {problem.split(":")[0] for problem in caught.value.problems}
    assert named == set(REQUIRED_SECRETS)
    assert not any(o["kind"] == "Secret" for o in rendered.objects()), "never rendered"


def test_labels_and_selectors_agree(rendered: Rendered) -> None:
    deployment = rendered.one("Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    server_labels = deployment["spec"]["template"]["metadata"]["labels"]
    job_labels = rendered.one("Job", "coinlink-migrate")["spec"]["template"]["metadata"]["labels"]
    assert matches(selector, server_labels)
    assert not matches(selector, job_labels), "the Service must not pick the Job's pod"
    assert rendered.one("Service")["spec"]["selector"] == selector
    assert rendered.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    (spread,) = pod_spec(deployment)["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"] == selector
    target = rendered.one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    policy = rendered.one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"]
    assert matches(policy, server_labels) and matches(policy, job_labels)


def test_service_and_ingress_reach_the_container_port(rendered: Rendered) -> None:
    container = only_container(rendered.one("Deployment"))
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    service = rendered.one("Service")
    assert service["spec"]["type"] == "ClusterIP"
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    for port in ports.values():
        assert named[port["targetPort"]] == port["port"] == PORT
    for ingress in (rendered.one("Ingress"), rendered.one("Ingress", "coinlink-ws")):
        for rule in ingress["spec"]["rules"]:
            assert rule["host"] == rendered.values["HOST"]
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == service["metadata"]["name"]
                assert backend["port"]["name"] in ports
    # Prometheus finds the pods by their annotations and scrapes them directly.
    template = rendered.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert template["prometheus.io/port"] == str(PORT)
    assert template["prometheus.io/path"] == "/metrics"


def routed(rendered: Rendered, url_path: str) -> list[str]:
    """Names of the Ingresses that route ``url_path`` (Exact or Prefix by path element)."""
    names = []
    for ingress in rendered.objects():
        if ingress["kind"] != "Ingress":
            continue
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                prefix = path["path"].rstrip("/")
                exact = path["pathType"] == "Exact"
                if url_path == path["path"] or (
                    not exact and (prefix == "" or url_path.startswith(prefix + "/"))
                ):
                    names.append(ingress["metadata"]["name"])
    return names


def test_ingress_routes_the_api_and_websockets_but_not_metrics(rendered: Rendered) -> None:
    for url_path in ("/api/v2/market/tickers", "/docs", LIVENESS, READINESS):
        assert routed(rendered, url_path) == ["coinlink"], url_path
    assert routed(rendered, "/ws") == ["coinlink-ws"]
    assert routed(rendered, "/metrics") == []
    body_limit = f"{Settings.model_fields['max_body_bytes'].default // 1024}k"
    for name in ("coinlink", "coinlink-ws"):
        ingress = rendered.one("Ingress", name)
        assert ingress["spec"]["ingressClassName"] == "nginx"
        annotations = ingress["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == body_limit
        assert [t["secretName"] for t in ingress["spec"]["tls"]] == [rendered.values["TLS_SECRET"]]
    websockets = rendered.one("Ingress", "coinlink-ws")["metadata"]["annotations"]
    for direction in ("read", "send"):
        assert websockets[f"nginx.ingress.kubernetes.io/proxy-{direction}-timeout"] == "3600"


def test_network_policy_admits_only_the_ingress_controller_and_prometheus(
    rendered: Rendered,
) -> None:
    spec = rendered.one("NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = spec["ingress"]
    namespaces = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for peer in rule["from"]
    }
    assert namespaces == {
        rendered.values["INGRESS_NAMESPACE"],
        rendered.values["PROMETHEUS_NAMESPACE"],
    }
    assert rule["ports"] == [{"protocol": "TCP", "port": PORT}]
    egress = {port["port"]: rule["to"] for rule in spec["egress"] for port in rule["ports"]}
    assert set(egress) == {53, 5432, 6379, 443, 9443}
    assert egress[5432] == [{"ipBlock": {"cidr": rendered.values["POSTGRES_CIDR"]}}]
    assert egress[6379] == [{"ipBlock": {"cidr": rendered.values["REDIS_CIDR"]}}]
    # Webhooks and exchanges: the public internet, never private or metadata addresses.
    public = {peer["ipBlock"]["cidr"]: set(peer["ipBlock"]["except"]) for peer in egress[443]}
    assert egress[443] == egress[9443]
    assert public["0.0.0.0/0"] >= {
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
    }
    assert public["::/0"] >= {"fc00::/7", "fe80::/10"}


def test_scaling_keeps_capacity_through_rollouts_and_disruptions(rendered: Rendered) -> None:
    deployment = rendered.one("Deployment")
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1
    hpa = rendered.one("HorizontalPodAutoscaler")["spec"]
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert rendered.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


# --- Railway (railway.json) ---------------------------------------------------------------

# Every field of Railway's "Config as Code" reference; anything else is not Railway's.
RAILWAY_FIELDS = {
    "build": {
        "builder", "watchPatterns", "buildCommand", "dockerfilePath", "railpackVersion",
        "nixpacksConfigPath", "nixpacksPlan", "nixpacksVersion",
    },
    "deploy": {
        "startCommand", "preDeployCommand", "multiRegionConfig", "healthcheckPath",
        "healthcheckTimeout", "restartPolicyType", "restartPolicyMaxRetries", "cronSchedule",
        "overlapSeconds", "drainingSeconds",
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def railway() -> dict[str, Any]:
    config = json.loads(RAILWAY.read_text())
    assert isinstance(config, dict)
    return config


def test_railway_uses_only_documented_fields(railway: dict[str, Any]) -> None:
    assert set(railway) <= {"$schema", *RAILWAY_FIELDS, "environments"}
    assert railway["$schema"] == "https://railway.com/railway.schema.json"
    for section, fields in RAILWAY_FIELDS.items():
        assert set(railway[section]) <= fields, section


def test_railway_builds_the_dockerfile_and_migrates_first(railway: dict[str, Any]) -> None:
    build, deploy = railway["build"], railway["deploy"]
    assert build["builder"] == "DOCKERFILE"
    assert (ROOT / build["dockerfilePath"]).is_file()
    assert "startCommand" not in deploy, "the image's CMD serves"
    (command,) = deploy["preDeployCommand"]
    script, *argv = shlex.split(command)
    assert console_scripts().get(script) == "coinlink.cli:main"
    assert cli_command(argv) == "cmd_migrate"


def test_railway_checks_readiness_and_outlasts_the_shutdown(railway: dict[str, Any]) -> None:
    deploy = railway["deploy"]
    assert deploy["healthcheckPath"] == READINESS
    assert deploy["restartPolicyType"] == "ON_FAILURE"
    # Numbers, not strings: Railway's parser refuses "15" although an example shows it.
    for field in ("healthcheckTimeout", "restartPolicyMaxRetries", "overlapSeconds"):
        assert type(deploy[field]) is int and deploy[field] > 0, field
    assert type(deploy["drainingSeconds"]) is int
    assert deploy["drainingSeconds"] >= BUDGET_S + 2, "SIGKILL before the server is done"


# --- Render (render.yaml) -----------------------------------------------------------------

# The fields of Render's "Blueprint YAML Reference" for the three kinds used here.
RENDER_FIELDS = {
    "web": {
        "type", "name", "runtime", "plan", "region", "repo", "branch", "rootDir",
        "dockerfilePath", "dockerContext", "dockerCommand", "registryCredential", "image",
        "numInstances", "scaling", "healthCheckPath", "preDeployCommand", "buildCommand",
        "startCommand", "envVars", "domains", "autoDeployTrigger", "buildFilter", "disk",
        "previews", "maxShutdownDelaySeconds", "initialDeployHook",
    },
    "keyvalue": {
        "type", "name", "plan", "region", "ipAllowList", "maxmemoryPolicy", "previewPlan",
    },
    "database": {
        "name", "databaseName", "user", "plan", "region", "postgresMajorVersion",
        "diskSizeGB", "ipAllowList", "highAvailability", "readReplicas", "previewPlan",
    },
}  # fmt: skip
RENDER_ENV_SOURCES = ({"value"}, {"generateValue"}, {"sync"}, {"fromDatabase"}, {"fromService"})


@pytest.fixture(scope="module")
def blueprint() -> dict[str, Any]:
    data = yaml.safe_load(RENDER.read_text())
    assert isinstance(data, dict) and set(data) <= {"services", "databases", "envVarGroups"}
    return data


def render_service(blueprint: dict[str, Any], kind: str) -> dict[str, Any]:
    (service,) = [s for s in blueprint["services"] if s["type"] == kind]
    return service  # type: ignore[no-any-return]


def render_env(blueprint: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["key"]: item for item in render_service(blueprint, "web")["envVars"]}


def test_render_uses_only_documented_fields(blueprint: dict[str, Any]) -> None:
    for service in blueprint["services"]:
        assert set(service) <= RENDER_FIELDS[service["type"]], service["name"]
    for database in blueprint["databases"]:
        assert set(database) <= RENDER_FIELDS["database"], database["name"]
    for key, item in render_env(blueprint).items():
        sources = set(item) - {"key"}
        assert sources in RENDER_ENV_SOURCES, f"{key}: one source each, got {sources}"
        if "value" in item:
            assert isinstance(item["value"], str), f"{key}: quote the value"


def test_render_builds_the_dockerfile_and_migrates_first(blueprint: dict[str, Any]) -> None:
    web = render_service(blueprint, "web")
    assert web["runtime"] == "docker"
    assert (ROOT / web["dockerContext"] / web["dockerfilePath"]).resolve() == ROOT / "Dockerfile"
    assert "dockerCommand" not in web, "the image's CMD serves"
    script, *argv = shlex.split(web["preDeployCommand"])
    assert console_scripts().get(script) == "coinlink.cli:main"
    assert cli_command(argv) == "cmd_migrate"
    # Render restarts an instance failing its check: liveness, as Kubernetes' liveness probe.
    assert web["healthCheckPath"] == LIVENESS
    assert web["numInstances"] >= 2
    assert 1 <= web["maxShutdownDelaySeconds"] <= 300
    assert web["maxShutdownDelaySeconds"] >= BUDGET_S + 2, "SIGKILL before the server is done"


def test_render_wires_the_database_and_key_value_privately(blueprint: dict[str, Any]) -> None:
    env = render_env(blueprint)
    (database,) = blueprint["databases"]
    assert env["COINLINK_DATABASE_URL"]["fromDatabase"] == {
        "name": database["name"],
        "property": "connectionString",
    }
    keyvalue = render_service(blueprint, "keyvalue")
    assert env["COINLINK_REDIS_URL"]["fromService"] == {
        "type": "keyvalue",
        "name": keyvalue["name"],
        "property": "connectionString",
    }
    assert keyvalue["ipAllowList"] == [] and database["ipAllowList"] == []
    assert keyvalue["maxmemoryPolicy"] == "noeviction", "leases must not be evicted"


def test_render_keeps_secrets_out_and_sets_the_rest(
    blueprint: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    env = render_env(blueprint)
    assert env["COINLINK_JWT_SECRET"] == {"key": "COINLINK_JWT_SECRET", "generateValue": True}
    assert env["COINLINK_METRICS_TOKEN"] == {"key": "COINLINK_METRICS_TOKEN", "generateValue": True}
    assert env["COINLINK_CORS_ORIGINS"] == {"key": "COINLINK_CORS_ORIGINS", "sync": False}
    assert set(env) - {"PORT"} <= set(variables())
    assert env["PORT"]["value"] == str(PORT), "Render routes to and checks PORT"
    assert "COINLINK_WORKERS" in env
    # What Render fills in: connection strings without a port, a base64 256-bit secret.
    filled = {
        "COINLINK_DATABASE_URL": "postgresql://coinlink:Kq2wX9vB4nR7@dpg-d0abc123-a/coinlink",
        "COINLINK_REDIS_URL": "redis://red-d0abc123:6379",
        "COINLINK_JWT_SECRET": base64.b64encode(bytes(range(1, 33))).decode(),
        "COINLINK_METRICS_TOKEN": base64.b64encode(bytes(range(33, 65))).decode(),
        "COINLINK_CORS_ORIGINS": REAL_ORIGINS,
    }
    clean_env.setenv("COINLINK_ENV", "production")  # the image's ENV
    for key, item in env.items():
        clean_env.setenv(key, item["value"] if "value" in item else filled[key])
    settings = load_settings()
    assert settings.is_production and settings.effective_auto_migrate is False
    assert settings.workers == int(env["COINLINK_WORKERS"]["value"])
