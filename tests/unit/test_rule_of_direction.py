"""The rule of direction is checked by `make lint` (import-linter, contracts in pyproject.toml).

Each test runs ``lint-imports`` on a copy of the repository's packages, once as they are and once
with one import that breaks the rule added, and shows that the check passes on the first and
fails, naming the broken contract, on the second.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: The repository root (tests/unit/test_rule_of_direction.py -> parents[2]).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Every top-level package the contracts name.
PACKAGES = ("ruta", "registry", "security_server", "adapters", "gateway", "sandbox")
#: Longest a lint run may take on a slow, shared machine.
LINT_TIMEOUT_S = 120

_RUN_LINT = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the packages' sources and of pyproject.toml (the contracts)."""
    root = tmp_path_factory.mktemp("tree")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, root / package, ignore=ignore)
    shutil.copy(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    # `python -c` puts the working directory first on sys.path: the copy, not the checkout.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, "-c", _RUN_LINT, "--no-logo", "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=LINT_TIMEOUT_S,
        check=False,
    )


def _inject(root: Path, package: str, source: str) -> Path:
    probe = root / package / "_direction_probe.py"
    probe.write_text(f'"""Breaks the rule of direction on purpose."""\n\n{source}\n')
    return probe


def test_the_packages_keep_the_rule(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("package", "source", "contract"),
    [
        ("security_server", "import registry.errors", "never import each other"),
        ("registry", "from security_server import server", "never import each other"),
        ("adapters", "import gateway", "never import each other"),
        ("ruta", "import security_server.server", "ruta imports no part"),
        ("ruta", "from sandbox import layout", "never imports the dev kit"),
        ("registry", "import sandbox.examples", "never imports the dev kit"),
        ("sandbox", "import security_server.server", "drives the registry and servers"),
    ],
)
def test_an_import_against_the_rule_fails_the_lint(
    tree: Path, package: str, source: str, contract: str
) -> None:
    probe = _inject(tree, package, source)
    try:
        result = _lint(tree)
    finally:
        probe.unlink()
    assert result.returncode == 1, result.stdout + result.stderr
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), result.stdout
    assert f"{package}._direction_probe" in result.stdout
