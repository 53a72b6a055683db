"""The delivery files, each checked by the real tool that consumes or lints it.

GitHub Actions workflows: actionlint (with shellcheck on every `run:` block) and the
GitHub-workflow JSON schema; Dependabot, compose: their JSON schemas (check-jsonschema
ships them); the Dockerfile: hadolint; the shell scripts: shellcheck. Each tool is also
shown a broken file, so a tool that silently checks nothing fails here. The post-deploy
check (scripts/check-live.sh) runs against a real server, healthy and with Redis gone.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from coinlink.db import apply_migrations
from tests.support import log_guard
from tests.support.apps import ServerProcess, server_env
from tests.support.services import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
SCRIPTS = [*sorted((ROOT / "scripts").glob("*.sh")), ROOT / ".ci" / "run"]


def tool(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # shellcheck for actionlint
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PATH": path},
    )


def assert_passes(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


# --- GitHub Actions -----------------------------------------------------------------------


def test_there_is_a_ci_and_a_deploy_workflow() -> None:
    assert {path.name for path in WORKFLOWS} == {"ci.yml", "deploy.yml", "rollout.yml"}


def test_workflows_pass_actionlint() -> None:
    assert_passes(tool("actionlint", "-color=false", *map(str, WORKFLOWS)))


def test_workflows_match_the_github_workflow_schema() -> None:
    assert_passes(
        tool(
            "check-jsonschema", "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)
        )
    )


def test_actionlint_and_the_schema_refuse_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n"
        "    steps:\n      - run: echo ${{ github.nonsense }}\n        shell: bash\n"
        "        timeout: 3\n"
    )
    assert tool("actionlint", "-color=false", str(broken), cwd=tmp_path).returncode != 0
    schema = tool("check-jsonschema", "--builtin-schema", "vendor.github-workflows", str(broken))
    assert schema.returncode != 0


def test_ci_tests_against_the_services_compose_runs() -> None:
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = ci["jobs"]["test"]["services"]
    assert services["postgres"]["image"] == compose["services"]["postgres"]["image"]
    assert services["redis"]["image"] == compose["services"]["redis"]["image"]


def test_ci_runs_the_readme_commands_and_the_image_check() -> None:
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    for command in ("make lint", "make test", "scripts/check-image.sh"):
        assert command in ci
    assert "make test" in (ROOT / "README.md").read_text()


def test_third_party_actions_are_pinned_by_commit() -> None:
    """Tags of actions outside GitHub's and Docker's own can be rewritten (trivy-action was)."""
    for workflow in WORKFLOWS:
        for action in re.findall(r"uses: ([\w.-]+/[\w.-]+)@(\S+)", workflow.read_text()):
            owner, ref = action[0].split("/")[0], action[1]
            if owner not in ("actions", "docker", "github"):
                assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{workflow.name}: {action} by tag"


# --- Dependabot, compose, Dockerfile, scripts --------------------------------------------


def test_dependabot_matches_its_schema_and_covers_every_ecosystem() -> None:
    path = ROOT / ".github" / "dependabot.yml"
    assert_passes(tool("check-jsonschema", "--builtin-schema", "vendor.dependabot", str(path)))
    ecosystems = {u["package-ecosystem"] for u in yaml.safe_load(path.read_text())["updates"]}
    assert ecosystems == {"pip", "github-actions", "docker", "docker-compose"}


def test_compose_matches_the_compose_spec(tmp_path: Path) -> None:
    compose = ROOT / "docker-compose.yml"
    assert_passes(tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(compose)))
    broken = tmp_path / "compose.yml"
    broken.write_text(compose.read_text().replace("restart: unless-stopped", "restart: [1]", 1))
    schema = tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(broken))
    assert schema.returncode != 0


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    assert_passes(tool("hadolint", "--no-color", str(ROOT / "Dockerfile")))
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python:latest\nUSER coinlink\nRUN cd /tmp && pip install x\n")
    assert tool("hadolint", "--no-color", str(broken)).returncode != 0


def test_base_image_made_locally_is_the_one_the_dockerfile_uses() -> None:
    froms = re.findall(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    engine = (ROOT / "scripts" / "container-engine.sh").read_text()
    base = re.search(r"^BASE_IMAGE=(\S+)", engine, re.MULTILINE)
    assert base is not None
    assert set(froms) == {base[1]}


def test_shell_scripts_pass_shellcheck() -> None:
    assert_passes(tool("shellcheck", "--external-sources", *map(str, SCRIPTS)))


# --- the post-deploy check against a real server ------------------------------------------

METRICS_TOKEN = secrets.token_hex(32)


@pytest.fixture
def live_server(fresh_pg_url: str) -> Iterator[tuple[ServerProcess, RedisServer]]:
    asyncio.run(apply_migrations(fresh_pg_url))
    redis = RedisServer().start()
    env = server_env(
        COINLINK_DATABASE_URL=fresh_pg_url,
        COINLINK_REDIS_URL=redis.url,
        COINLINK_REDIS_TIMEOUT_S="0.5",
        COINLINK_CHECK_TIMEOUT_S="0.5",
        COINLINK_METRICS_TOKEN=METRICS_TOKEN,
    )
    server = ServerProcess(env, workers=2)
    try:
        yield server.wait_ready(), redis
    finally:
        server.stop()
        redis.stop()


def check_live(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "check-live.sh"), url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        # The coinlink command of this checkout, as a deploy host has it in the image.
        env={
            **os.environ,
            "CHECK_LIVE_WAIT_S": "2",
            "CHECK_LIVE_METRICS_TOKEN": METRICS_TOKEN,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        },
    )


@pytest.mark.expected_errors(*log_guard.REDIS_GONE)
def test_post_deploy_check_passes_on_a_healthy_server_and_names_what_fails(
    live_server: tuple[ServerProcess, RedisServer],
) -> None:
    server, redis = live_server
    healthy = check_live(server.base_url)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "fail" not in healthy.stderr

    redis.stop()
    broken = check_live(server.base_url)
    assert broken.returncode == 1
    assert "fail readiness" in broken.stderr
    assert "pass health" in broken.stderr


def test_post_deploy_check_fails_against_nothing() -> None:
    nothing = check_live(f"http://127.0.0.1:{free_port()}")
    assert nothing.returncode == 1
    assert "fail health" in nothing.stderr
