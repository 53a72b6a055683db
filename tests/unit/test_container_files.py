"""Static checks of the container and deployment files: nothing here needs a Docker engine.

They read the real Dockerfile, docker-compose.yml, .env.production.example and deploy/
files and hold them to the contract of config/settings.py, coinlink/cli.py and setup.cfg,
so a renamed setting, a dropped healthcheck or a placeholder that would start in
production fails here instead of in a deployment.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from coinlink.cli import build_parser
from config import ConfigError, Settings, load_settings
from config.settings import variables
from tests.support import nginx
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.production.example"
NGINX = ROOT / "deploy" / "nginx" / "nginx.conf"
NGINX_UPSTREAMS = NGINX.with_name("coinlink-upstreams.conf")
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
SETUP_CFG = ROOT / "setup.cfg"

PREFIX = "COINLINK_"
REQUIRED_IN_PRODUCTION = ("database_url", "redis_url", "jwt_secret", "cors_origins")
REAL_SECRET = "Zq8vN3tR6yB1mK4pX7cW2eH5jL9sD0fG"
REAL_ORIGINS = "https://app.coinlink.io"
BUILD_TOOLS = ("build-essential", "gcc", "g++", "clang", "make", "libc6-dev", "python3-dev")


# --- parsers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, one list per ``FROM`` (global ``ARG`` lines dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, also inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"

    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def exec_form(args: str) -> list[str]:
    """``["a", "b"]`` (exec form) as a list; the shell form is refused."""
    assert args.startswith("["), f"expected the exec form (JSON array), got {args!r}"
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def copy_parts(args: str) -> tuple[list[str], list[str]]:
    """``COPY [--flags] src... dest`` as (flags, sources)."""
    words = shlex.split(args)
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    if len(paths) == 1 and paths[0].startswith("["):
        paths = json.loads(paths[0])
    assert len(paths) >= 2, f"COPY needs a source and a destination: {args!r}"
    return flags, paths[:-1]


def env_pairs(args: str) -> dict[str, str]:
    """``ENV A=1 B=2`` as a dict (the legacy ``ENV A 1`` form included)."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def env_file_assignments(path: Path) -> dict[str, str]:
    """Active ``KEY=value`` lines of an env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"line {number}: {raw!r}"
        assert not value.startswith(("'", '"')), f"line {number}: keep values unquoted"
        values[key] = value
    return values


def console_scripts() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    scripts = {}
    for line in parser["options.entry_points"]["console_scripts"].strip().splitlines():
        name, _, target = line.partition("=")
        scripts[name.strip()] = target.strip()
    return scripts


def cli_command(argv: list[str]) -> str:
    """The name of the ``coinlink`` command function that ``argv`` (after the script) runs."""
    args = build_parser().parse_args(argv)
    return str(args.func.__name__)


def duration_s(value: str) -> float:
    """A compose duration (``20s``, ``1m30s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"bad duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def nginx_blocks(text: str, header: str) -> list[str]:
    """Bodies of the blocks whose header matches the regex ``header`` (braces balanced)."""
    bodies = []
    for match in re.finditer(header + r"\s*\{", text):
        depth, start = 1, match.end()
        for index in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            if depth == 0:
                bodies.append(text[start:index])
                break
    return bodies


def nginx_text(path: Path = NGINX) -> str:
    return "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def example() -> dict[str, str]:
    return env_file_assignments(ENV_EXAMPLE)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No ``COINLINK_*`` variable from the suite (conftest sets some) and no stray .env."""
    import os

    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def load_example(monkeypatch: pytest.MonkeyPatch, **replace: str) -> Settings:
    """Load the example's ``COINLINK_*`` lines as the process environment would."""
    for key, value in env_file_assignments(ENV_EXAMPLE).items():
        if key.startswith(PREFIX):
            monkeypatch.setenv(key, replace.get(key.removeprefix(PREFIX).lower(), value))
    return load_settings()


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_on_one_base_image() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "expected a builder stage and a final stage"
    images = [stage[0].args.split()[0] for stage in stages]
    # The venv copied from the builder links to the builder's interpreter: same base image.
    assert images[0] == images[-1], images
    assert images[-1].startswith("python:3.11-slim"), images


def test_builder_copies_only_existing_unignored_sources() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    sources = []
    for instruction in dockerfile_stages()[0]:
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        flags, paths = copy_parts(instruction.args)
        if any(flag.startswith("--from") for flag in flags):
            continue
        for source in paths:
            assert list(ROOT.glob(source.removeprefix("./"))), f"COPY source missing: {source}"
            assert Path(source).parts[0] not in ignored, f"{source} is in .dockerignore"
            sources.append(source)
    assert sources, "the builder copies nothing from the build context"


def test_builder_copies_every_installed_package() -> None:
    """setup.cfg's find_packages only sees what the builder copied into the context."""
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    top_level = {
        name.strip()
        for name in parser["options.packages.find"]["include"].split()
        if name.strip() and "." not in name
    }
    copied: set[str] = set()
    for instruction in dockerfile_stages()[0]:
        if instruction.keyword == "COPY":
            copied.update(Path(p).parts[0] for p in copy_parts(instruction.args)[1])
    assert top_level <= copied, f"packages not copied into the builder: {top_level - copied}"
    assert {"setup.cfg", "pyproject.toml"} <= copied


def test_every_source_directory_is_a_package() -> None:
    """find_packages skips a directory without __init__.py: its modules would miss the image."""
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    top_level = [n for n in parser["options.packages.find"]["include"].split() if "." not in n]
    missing = sorted(
        str(directory.relative_to(ROOT))
        for name in top_level
        for directory in [ROOT / name, *(ROOT / name).rglob("*")]
        if directory.is_dir()
        and directory.name != "__pycache__"
        and any(directory.glob("*.py"))
        and not (directory / "__init__.py").is_file()
    )
    assert not missing, f"not packages, so not installed into the image: {missing}"


def test_final_stage_runs_as_non_root() -> None:
    users = [i.args for i in dockerfile_stages()[-1] if i.keyword == "USER"]
    assert users, "the final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", ""), users[-1]


def test_final_stage_copies_only_from_the_builder() -> None:
    final = dockerfile_stages()[-1]
    copies = [i for i in final if i.keyword in ("COPY", "ADD")]
    assert copies, "the final stage copies nothing"
    for instruction in copies:
        flags, _ = copy_parts(instruction.args)
        assert any(flag.startswith("--from=") for flag in flags), (
            f"the final stage copies from the build context: {instruction.args}"
        )


def test_final_stage_installs_no_build_tools() -> None:
    for instruction in dockerfile_stages()[-1]:
        if instruction.keyword != "RUN" or "install" not in instruction.args:
            continue
        words = set(re.split(r"[\s;&|]+", instruction.args))
        assert not words & set(BUILD_TOOLS), f"build tools in the final image: {instruction}"
        assert not any(w.endswith("-dev") for w in words), instruction.args


def test_final_stage_environment_names_real_settings() -> None:
    env: dict[str, str] = {}
    for instruction in dockerfile_stages()[-1]:
        if instruction.keyword == "ENV":
            env.update(env_pairs(instruction.args))
    assert env.get("COINLINK_ENV") == "production"
    assert env.get("COINLINK_HOST") == "0.0.0.0"  # noqa: S104 - the container must listen
    assert "/opt/venv/bin" in env.get("PATH", "")
    unknown = [k for k in env if k.startswith(PREFIX) and k not in variables()]
    assert not unknown, f"ENV names no setting: {unknown}"


def test_healthcheck_probes_liveness_on_the_exposed_port() -> None:
    final = dockerfile_stages()[-1]
    checks = [i.args for i in final if i.keyword == "HEALTHCHECK"]
    assert checks, "no HEALTHCHECK in the final stage"
    assert "/health" in checks[-1] and "/readyz" not in checks[-1]
    assert "urllib" in checks[-1], "slim images have no curl: use python's urllib"
    exposed = [i.args for i in final if i.keyword == "EXPOSE"]
    default_port = Settings.model_fields["port"].default
    assert exposed and exposed[-1].split("/")[0] == str(default_port)
    assert str(default_port) in checks[-1]


def test_cmd_serves_with_the_declared_console_script() -> None:
    final = dockerfile_stages()[-1]
    cmds = [exec_form(i.args) for i in final if i.keyword == "CMD"]
    assert cmds, "no CMD in the final stage"
    script, *argv = cmds[-1]
    assert console_scripts().get(script) == "coinlink.cli:main"
    assert cli_command(argv) == "cmd_serve"
    signals = [i.args for i in final if i.keyword == "STOPSIGNAL"]
    assert signals in ([], ["SIGTERM"])


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    for needed in (".env", ".env.*", ".venv", ".git", "var", "tests"):
        assert needed in patterns, f".dockerignore misses {needed}"


# --- docker-compose.yml -------------------------------------------------------------------


def test_compose_has_the_four_services(services: dict[str, Any]) -> None:
    assert {"postgres", "redis", "migrate", "app"} <= set(services)


@pytest.mark.parametrize(("service", "probe"), [("postgres", "pg_isready"), ("redis", "ping")])
def test_backing_services_have_healthchecks(
    services: dict[str, Any], service: str, probe: str
) -> None:
    test = services[service].get("healthcheck", {}).get("test")
    assert test, f"{service} has no healthcheck"
    assert probe in (test if isinstance(test, str) else " ".join(test))


def test_app_starts_after_healthy_backends_and_a_finished_migration(
    services: dict[str, Any],
) -> None:
    depends = services["app"]["depends_on"]
    assert isinstance(depends, dict), "depends_on needs the long form to carry conditions"
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"


def test_migrate_is_a_one_shot_coinlink_migrate(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    command = migrate["command"]
    argv = shlex.split(command) if isinstance(command, str) else command
    assert argv[0] in console_scripts()
    assert cli_command(argv[1:]) == "cmd_migrate"
    # Unquoted, YAML reads `no` as false, which compose rejects.
    assert migrate.get("restart", "no") == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_app_healthcheck_and_graceful_stop(
    services: dict[str, Any], example: dict[str, str]
) -> None:
    app = services["app"]
    test = app["healthcheck"]["test"]
    assert "/health" in (test if isinstance(test, str) else " ".join(test))
    # The server exits within its shutdown budget of SIGTERM; compose must wait longer.
    budget = float(example["COINLINK_SHUTDOWN_BUDGET_S"])
    assert duration_s(str(app.get("stop_grace_period", "10s"))) > budget


def test_app_publishes_the_port_it_serves(services: dict[str, Any]) -> None:
    ports = [str(p) for p in services["app"]["ports"]]
    default_port = Settings.model_fields["port"].default
    assert any(p.split(":")[-1] == str(default_port) for p in ports), ports


def test_env_files_exist_as_examples(services: dict[str, Any]) -> None:
    referenced = set()
    for service in services.values():
        files = service.get("env_file", [])
        for entry in [files] if isinstance(files, str | dict) else files:
            referenced.add(entry["path"] if isinstance(entry, dict) else entry)
    assert ".env.production" in referenced
    for name in referenced:
        path = ROOT / name
        assert path.exists() or path.with_name(path.name + ".example").exists(), name


def test_compose_variables_are_defined_in_the_example(example: dict[str, str]) -> None:
    text = COMPOSE.read_text()
    # `$$` escapes substitution; `${VAR...}` and `$VAR` are substituted by compose.
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    used |= set(re.findall(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)", text))
    assert used, "expected ${...} substitutions for the database credentials"
    missing = sorted(used - set(example))
    assert not missing, f"used in docker-compose.yml, not in .env.production.example: {missing}"


def test_compose_hard_codes_no_secret(services: dict[str, Any]) -> None:
    for name, service in services.items():
        environment = service.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        for key, value in environment.items():
            if re.search(r"PASSWORD|SECRET|TOKEN|DSN|KEY", key):
                assert re.fullmatch(r"\$\{[^}]+\}", str(value)), f"{name}.{key} is hard-coded"


def test_build_contexts_exist(services: dict[str, Any]) -> None:
    built = {name: s["build"] for name, s in services.items() if "build" in s}
    assert {"migrate", "app"} <= set(built)
    for name, build in built.items():
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (ROOT / context).is_dir(), f"{name}: no build context {context}"
        assert (ROOT / context / dockerfile).is_file(), f"{name}: no {dockerfile} in {context}"


# --- .env.production.example --------------------------------------------------------------


def test_example_documents_every_setting() -> None:
    text = ENV_EXAMPLE.read_text()
    lines = text.splitlines()
    for variable in variables():
        pattern = re.compile(rf"^(#\s*)?{variable}=")
        at = [i for i, line in enumerate(lines) if pattern.match(line)]
        assert len(at) == 1, f"{variable} should appear once as an assignment, found {len(at)}"
        above = lines[at[0] - 1] if at[0] else ""
        assert above.startswith("#") and "=" not in above.split()[1:2], (
            f"{variable} has no comment above it"
        )
    documented = set(re.findall(rf"^#?\s*{PREFIX}([A-Z0-9_]+)=", text, flags=re.M))
    stale = sorted(n for n in documented if f"{PREFIX}{n}" not in variables())
    assert not stale, f"not settings (typo or removed field): {stale}"


def test_example_marks_required_settings(example: dict[str, str]) -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for name in REQUIRED_IN_PRODUCTION:
        variable = f"{PREFIX}{name.upper()}"
        assert variable in example, f"{variable} must be an active line"
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{variable}="))
        comment = []
        for line in reversed(lines[:at]):
            if not line.startswith("#"):
                break
            comment.append(line)
        assert "REQUIRED" in " ".join(comment), f"{variable} is not marked REQUIRED"


def test_unedited_example_is_refused_in_production(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as caught:
        load_example(clean_env)
    assert any(p.startswith("COINLINK_JWT_SECRET:") for p in caught.value.problems), (
        caught.value.problems
    )
    assert "COINLINK_ENV=production" in str(caught.value)


def test_unedited_example_has_no_usable_database_password(example: dict[str, str]) -> None:
    # Empty on purpose: compose's `${POSTGRES_PASSWORD:?...}` refuses unset *and* empty.
    assert example["POSTGRES_PASSWORD"] == ""
    assert re.search(r"\$\{POSTGRES_PASSWORD:\?", COMPOSE.read_text())
    assert urlsplit(example["COINLINK_DATABASE_URL"]).password in (None, "")


def test_example_placeholder_secret_is_refused_on_its_own(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as caught:
        load_example(clean_env, cors_origins=REAL_ORIGINS)
    assert [p.split(":")[0] for p in caught.value.problems] == ["COINLINK_JWT_SECRET"]


def test_example_starts_once_placeholders_are_replaced(
    clean_env: pytest.MonkeyPatch, example: dict[str, str]
) -> None:
    settings = load_example(clean_env, jwt_secret=REAL_SECRET, cors_origins=REAL_ORIGINS)
    assert settings.is_production
    assert settings.effective_auto_migrate is False, "the migrate service owns migrations"
    database = urlsplit(settings.effective_database_url)
    assert database.hostname == "postgres"
    assert database.username == example["POSTGRES_USER"]
    assert database.password == example["POSTGRES_PASSWORD"]
    assert database.path.lstrip("/") == example["POSTGRES_DB"]
    assert urlsplit(settings.redis.url or "").hostname == "redis"


def test_example_services_match_compose(services: dict[str, Any], example: dict[str, str]) -> None:
    for variable, service in (
        ("COINLINK_DATABASE_URL", "postgres"),
        ("COINLINK_REDIS_URL", "redis"),
    ):
        assert service in services
        assert urlsplit(example[variable]).hostname == service, f"{variable}: not {service}"


# --- deploy/ ------------------------------------------------------------------------------


def test_nginx_proxies_websockets_with_upgrade_headers() -> None:
    blocks = nginx_blocks(nginx_text(), r"location\s+(?:=\s*)?/ws")
    assert len(blocks) == 1, "expected one `location /ws` block"
    ws = blocks[0]
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade\s*;", ws)
    assert re.search(
        r"proxy_set_header\s+Connection\s+(\$connection_upgrade|\"?upgrade\"?)\s*;", ws
    )
    assert re.search(r"proxy_http_version\s+1\.1\s*;", nginx_text())
    timeout = re.search(r"proxy_read_timeout\s+(\d+)(s|m|h)?\s*;", ws)
    assert timeout, "/ws needs a long proxy_read_timeout"
    seconds = int(timeout.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[timeout.group(2)]
    assert seconds >= 300


def test_nginx_every_proxied_location_forwards_client_and_request_id() -> None:
    text = nginx_text()
    locations = nginx_blocks(text, r"location\s+[^{]+")
    proxied = [body for body in locations if "proxy_pass" in body]
    assert len(proxied) >= 2
    for body in proxied:
        # A location that sets any header inherits none from the server block.
        assert re.search(r"proxy_set_header\s+X-Forwarded-For\s+\$proxy_add_x_forwarded_for", body)
        assert re.search(r"proxy_set_header\s+X-Request-ID\s+\$\S*request_id", body)
        assert re.search(r"proxy_pass\s+http://coinlink(_ws)?\s*;", body)


def test_nginx_balances_several_instances_with_the_app_body_limit() -> None:
    text = nginx_text()
    upstreams = nginx_blocks(text, r"upstream\s+coinlink(?:_ws)?")
    assert len(upstreams) == 2, "expected the upstreams coinlink and coinlink_ws"
    for body in upstreams:  # the same instances, from the one file an operator edits
        assert re.search(r"^\s*include\s+coinlink-upstreams\.conf\s*;", body, flags=re.M)
    assert len(re.findall(r"^\s*server\s+\S+", nginx_text(NGINX_UPSTREAMS), flags=re.M)) >= 2
    limit = re.search(r"client_max_body_size\s+(\d+)([kKmM]?)\s*;", text)
    assert limit, "no client_max_body_size"
    size = int(limit.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[limit.group(2).lower()]
    assert size == Settings.model_fields["max_body_bytes"].default


def test_nginx_accepts_the_shipped_config(tmp_path: Path) -> None:
    """``nginx -t`` on deploy/nginx/ with the example upstreams (the listen include on a
    free port and the paths in ``tmp_path``: port 80 and /var/log need root)."""
    config = nginx.render(tmp_path, None, free_port())
    checked = nginx.check_config(tmp_path, config)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == "", "nginx warns about the config"
    assert "server 10.0.0.11:8000" in (tmp_path / nginx.UPSTREAMS).read_text()


def test_prometheus_scrapes_the_app_metrics(services: dict[str, Any]) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = config["scrape_configs"]
    coinlink = [job for job in jobs if job.get("metrics_path", "/metrics") == "/metrics"]
    assert coinlink, "no scrape job reads /metrics"
    targets = [t for job in coinlink for sc in job["static_configs"] for t in sc["targets"]]
    default_port = str(Settings.model_fields["port"].default)
    assert any(t.split(":")[0] in services and t.endswith(f":{default_port}") for t in targets)
