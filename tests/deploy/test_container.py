"""deploy/container/Dockerfile, checked statically: no container engine runs where the tests run,
so the image is not built here (docs/operator/deploy.md says so). What is checked is what the
operator guide promises: a multi-stage build whose runtime stage copies only the built
environment, runs as an unprivileged numeric user, works on a read-only root filesystem and
checks health through the gRPC health service."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "container" / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for word, args in self.instructions if word == keyword]


def _stages(text: str) -> list[Stage]:
    """The Dockerfile's stages: instructions with continuation lines joined, comments dropped."""
    logical = re.sub(r"\\\n", " ", text)
    stages: list[Stage] = []
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return _stages(DOCKERFILE.read_text())


def test_multi_stage(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    build, runtime = stages[0], stages[-1]
    assert build.name is not None
    # The runtime stage takes only the built environment from the build stage.
    copies = runtime.all("COPY")
    assert copies == [f"--from={build.name} /opt/ruta /opt/ruta"]
    # Generated code is made in the build, never copied from a work tree.
    assert any("grpc_tools.protoc" in run for run in build.all("RUN"))


def test_runs_as_an_unprivileged_numeric_user(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert users, "the runtime stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert not gid or int(gid) != 0


def test_ready_for_a_read_only_root_filesystem(stages: list[Stage]) -> None:
    runtime = stages[-1]
    env = " ".join(runtime.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert any("compileall" in run for run in stages[0].all("RUN"))
    assert runtime.all("VOLUME") == ['["/var/lib/ruta"]']


def test_health_check_on_the_grpc_health_service(stages: list[Stage]) -> None:
    (check,) = stages[-1].all("HEALTHCHECK")
    options, _, command = check.partition("CMD")
    assert "--interval=" in options
    assert command.strip().startswith('["ruta", "health"')
    assert stages[-1].all("ENTRYPOINT") == ['["ruta"]']


def test_no_remote_additions(stages: list[Stage]) -> None:
    for stage in stages:
        assert not stage.all("ADD"), "COPY, never ADD (no remote URLs or archives)"


def test_the_build_context_leaves_local_state_out() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "ruta/v1/*_pb2*.py"} <= ignored
    # Every path the build copies exists and is not ignored.
    for stage in _stages(DOCKERFILE.read_text()):
        for args in stage.all("COPY"):
            words = shlex.split(args)
            if words[0].startswith("--from="):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), source
                assert source not in ignored, source
