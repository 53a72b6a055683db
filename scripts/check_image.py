"""Run a built CoinLink image the way production does and check what an operator relies on.

    .venv/bin/python scripts/check_image.py --engine podman --image coinlink:check

(scripts/check-image.sh builds the image first.) Against real PostgreSQL and Redis (the
suite's servers when they answer, else throwaway ones): `serve` refuses while migrations
are pending, `coinlink migrate` applies them, `serve` (two workers) answers /health and
/readyz, the process runs as a numeric non-root uid on a read-only root filesystem with a
tmpfs /tmp and no-new-privileges, SIGTERM ends it with exit 0 inside the 10 s a runtime
waits before SIGKILL, and it logs nothing at error level. Exits 1 naming each failed check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.services import (  # noqa: E402  (after the path insert)
    create_database,
    drop_database,
    free_port,
    postgres_server,
    redis_server,
)

UID = 10001
GRACE_S = 10.0  # what Docker and Kubernetes wait after SIGTERM before SIGKILL
START_S = 60.0


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        print(f"{'ok  ' if ok else 'FAIL'}  {name}{f'  ({detail})' if detail else ''}", flush=True)
        if not ok:
            self.failed.append(name)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 (our own URL)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def error_lines(logs: str) -> list[str]:
    """Log lines at error level or above (the JSON log's `level`, or a traceback)."""
    found = []
    for line in logs.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            if "Traceback" in line or line.startswith(("ERROR", "CRITICAL")):
                found.append(line)
            continue
        if isinstance(record, dict) and str(record.get("level")).lower() in (
            "error",
            "critical",
        ):
            found.append(line)
    return found


def check_image(engine: str, image: str, database_url: str, redis_url: str) -> list[str]:
    checks = Checks()
    inspected = json.loads(run([engine, "image", "inspect", image]).stdout)[0]
    config = inspected.get("Config") or {}
    size_mb = int(inspected.get("Size", 0)) / 1e6
    print(f"image {image}: {size_mb:.0f} MB", flush=True)
    checks.check(
        "USER is numeric and not root",
        config.get("User") == f"{UID}:{UID}",
        repr(config.get("User")),
    )
    # Docker keeps it under Config, Podman at the top level.
    healthcheck = config.get("Healthcheck") or inspected.get("Healthcheck") or {}
    test = list(healthcheck.get("Test") or [])
    checks.check("HEALTHCHECK kept in the image", test[:1] == ["CMD"], repr(test[:1]))

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env_file = Path(tmp) / "env"
        env_file.write_text(
            "\n".join(
                [
                    f"COINLINK_DATABASE_URL={database_url}",
                    f"COINLINK_REDIS_URL={redis_url}",
                    f"COINLINK_JWT_SECRET={secrets.token_urlsafe(48)}",
                    "COINLINK_CORS_ORIGINS=https://app.example.com",
                    "COINLINK_HOST=127.0.0.1",
                    f"COINLINK_PORT={port}",
                    "COINLINK_WORKERS=2",
                ]
            )
            + "\n"
        )
        env_file.chmod(0o600)
        # What docker-compose.yml asks of the runtime.
        hardened = [
            "--network", "host", "--init", "--read-only", "--tmpfs", "/tmp",
            "--security-opt", "no-new-privileges", "--cap-drop", "ALL",
            "--env-file", str(env_file),
        ]  # fmt: skip
        refused = run([engine, "run", "--rm", *hardened, image])
        checks.check(
            "serve refuses while migrations are pending (exit 3)",
            refused.returncode == 3,
            f"exit {refused.returncode}",
        )
        migrated = run([engine, "run", "--rm", *hardened, image, "coinlink", "migrate"])
        checks.check(
            "coinlink migrate exits 0",
            migrated.returncode == 0,
            "" if migrated.returncode == 0 else migrated.stderr.strip()[-300:],
        )

        name = f"coinlink-check-{secrets.token_hex(4)}"
        started = run([engine, "run", "--detach", "--name", name, *hardened, image])
        if started.returncode != 0:
            checks.check("serve starts", False, started.stderr.strip()[-300:])
            return checks.failed
        try:
            base = f"http://127.0.0.1:{port}"
            up = wait_until(lambda: http_status(f"{base}/health") == 200, START_S)
            checks.check("/health answers 200", up)
            ready = wait_until(lambda: http_status(f"{base}/readyz") == 200, START_S)
            checks.check("/readyz answers 200 (database and bus reachable)", ready)
            # The image's own verify command, as the deploy check runs it.
            verified = run([engine, "exec", name, "coinlink", "verify", "--url", base, "--json"])
            try:
                report = json.loads(verified.stdout)["checks"]
            except (ValueError, KeyError):
                report = []  # it did not get as far as a report: its stderr says why
            failed = [check["name"] for check in report if check["status"] == "fail"]
            checks.check(
                "coinlink verify passes against it",
                verified.returncode == 0,
                ", ".join(failed) or verified.stderr.strip()[-300:],
            )

            probe = run([engine, "exec", name, *test[1:]]) if test else None
            checks.check(
                "the HEALTHCHECK command passes",
                probe is not None and probe.returncode == 0,
                probe.stderr.strip()[-300:] if probe else "none",
            )
            uid = run([engine, "exec", name, "id", "-u"]).stdout.strip()
            checks.check("runs as uid 10001", uid == str(UID), uid)
            # As uid 0: only a read-only mount (not file permissions) can refuse root here.
            root_write = run([engine, "exec", "--user", "0", name, "touch", "/probe"])
            checks.check(
                "root filesystem is read-only",
                "Read-only file system" in root_write.stderr,
                root_write.stderr.strip() or f"exit {root_write.returncode}",
            )
            tmp_write = run([engine, "exec", name, "sh", "-c", "echo x > /tmp/probe"])
            checks.check(
                "/tmp is writable (tmpfs)", tmp_write.returncode == 0, tmp_write.stderr.strip()
            )
            status = run([engine, "exec", name, "cat", "/proc/1/status"]).stdout
            checks.check("no-new-privileges set", "NoNewPrivs:\t1" in status)
            # The bounding set: what even a root process in the container could ever hold.
            bounding = next((x for x in status.splitlines() if x.startswith("CapBnd:")), "")
            checks.check("every capability dropped", bounding.endswith("0" * 16), bounding)

            begun = time.monotonic()
            run([engine, "stop", "--time", str(int(GRACE_S)), name], timeout=GRACE_S + 30)
            took = time.monotonic() - begun
            state = json.loads(run([engine, "inspect", name]).stdout)[0]["State"]
            exit_code = state.get("ExitCode")
            checks.check(
                "SIGTERM: exit 0 within the grace period",
                exit_code == 0 and took < GRACE_S,
                f"exit {exit_code} after {took:.1f} s",
            )
            logs = run([engine, "logs", name])
            errors = error_lines(logs.stdout + logs.stderr)
            checks.check("nothing logged at error level", not errors, "; ".join(errors)[:500])
            if checks.failed:
                print((logs.stdout + logs.stderr)[-4000:], file=sys.stderr)
        finally:
            run([engine, "rm", "--force", name])
    return checks.failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="docker")
    parser.add_argument("--image", default="coinlink:check")
    args = parser.parse_args()
    os.environ.setdefault(
        "COINLINK_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
    )
    os.environ.setdefault("COINLINK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    name = f"coinlink_image_{secrets.token_hex(4)}"
    with postgres_server() as server, redis_server() as redis_url:
        database_url = asyncio.run(create_database(server, name))
        try:
            # A database index of its own on a shared Redis.
            failed = check_image(
                args.engine, args.image, database_url, redis_url.rsplit("/", 1)[0] + "/13"
            )
        finally:
            asyncio.run(drop_database(server, name))
    if failed:
        print(f"image check failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("image check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
