"""The hash-pinned locks in requirements/ agree with setup.cfg's ranges and with each other.

Every install (make run, make test, .ci/run, the Dockerfile) takes the locks with
--require-hashes --no-deps, so a range changed in setup.cfg without `make lock`, a pin that
the ranges no longer admit or a package missing from a lock would otherwise surface only
on a fresh machine.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+)(?:\s*;\s*(?P<marker>[^\\]+?))?\s*\\$"
)
HASH = re.compile(r"^\s+--hash=sha256:[0-9a-f]{64}(?: \\)?$")


def read_lock(name: str) -> dict[NormalizedName, tuple[Version, Marker | None]]:
    """``name==version`` pins of a lock; each must carry at least one sha256 hash."""
    pins: dict[NormalizedName, tuple[Version, Marker | None]] = {}
    lines = (LOCKS / name).read_text().splitlines()
    for index, line in enumerate(lines):
        match = PIN.match(line)
        if match is None:
            continue
        assert HASH.match(lines[index + 1]), f"{name}: {line.split()[0]} has no hash"
        marker = match["marker"]
        pins[canonicalize_name(match["name"])] = (
            Version(match["version"]),
            Marker(marker) if marker else None,
        )
    assert pins, f"{name} pins nothing"
    return pins


def requirements(section: str, option: str) -> list[Requirement]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser[section][option].strip().splitlines()
    return [Requirement(line.strip()) for line in lines if line.strip()]


def assert_locked(requirement: Requirement, lock: str) -> None:
    pins = read_lock(lock)
    name = canonicalize_name(requirement.name)
    assert name in pins, f"setup.cfg needs {requirement}, {lock} has no pin: run `make lock`"
    version = pins[name][0]
    assert requirement.specifier.contains(version, prereleases=True), (
        f"{lock} pins {name}=={version}, outside setup.cfg's {requirement}: run `make lock`"
    )


@pytest.mark.parametrize("requirement", requirements("options", "install_requires"), ids=str)
def test_every_runtime_requirement_is_pinned_in_the_runtime_lock(requirement: Requirement) -> None:
    assert_locked(requirement, "runtime.txt")


@pytest.mark.parametrize(
    "requirement",
    [
        *requirements("options", "install_requires"),
        *(
            r
            for extra in ("test", "bench", "dev")
            for r in requirements("options.extras_require", extra)
        ),
    ],
    ids=str,
)
def test_every_requirement_and_extra_is_pinned_in_the_dev_lock(requirement: Requirement) -> None:
    assert_locked(requirement, "dev.txt")


def test_build_lock_satisfies_the_build_system() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    requires = re.search(r"^requires = \[(.*)\]$", text, re.MULTILINE)
    assert requires is not None
    for item in re.findall(r'"([^"]+)"', requires[1]):
        assert_locked(Requirement(item), "build.txt")


def test_locks_agree_on_every_shared_pin() -> None:
    locks = {name: read_lock(name) for name in ("build.txt", "runtime.txt", "dev.txt")}
    runtime, dev = locks["runtime.txt"], locks["dev.txt"]
    assert set(runtime) <= set(dev), f"only in runtime.txt: {sorted(set(runtime) - set(dev))}"
    for first in locks:
        for second in locks:
            for name in set(locks[first]) & set(locks[second]):
                assert locks[first][name][0] == locks[second][name][0], (
                    f"{name}: {first} and {second} pin different versions: run `make lock`"
                )


def test_locks_name_the_command_that_regenerates_them() -> None:
    for lock in ("build.txt", "runtime.txt", "dev.txt"):
        assert "#    make lock" in (LOCKS / lock).read_text(), f"{lock} was not made by `make lock`"


def test_a_range_the_lock_misses_is_reported() -> None:
    """The check can fail: a requirement beyond the pinned version names the fix."""
    with pytest.raises(AssertionError, match="make lock"):
        assert_locked(Requirement("redis>=99"), "runtime.txt")
    with pytest.raises(AssertionError, match="no pin"):
        assert_locked(Requirement("not-a-dependency>=1"), "runtime.txt")
