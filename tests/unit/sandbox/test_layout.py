"""The kit's place: its CLI group comes through the entry point, it finds the adapters' examples
through their package, and the audit command owns the name of sandbox.json."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import adapters.examples
from ruta.evidence import cli as audit_cli
from sandbox import cli, layout


def test_the_sandbox_group_is_the_entry_point() -> None:
    (entry,) = (e for e in metadata.entry_points(group="ruta.cli") if e.name == "sandbox")
    assert entry.value == "sandbox.cli:group"
    assert entry.load() is cli.group
    assert set(cli.group.commands) == {"up", "down", "restart"}


def test_examples_dir_is_the_adapters_examples_package() -> None:
    folder = layout.examples_dir()
    assert folder.resolve() == Path(adapters.examples.__file__ or "").parent.resolve()
    for spec in layout.SERVICES:
        assert (folder / spec.example / "adapter.toml").is_file()
        assert (folder / spec.example / spec.proto).is_file()


def test_sandbox_file_belongs_to_its_production_reader() -> None:
    assert layout.SANDBOX_FILE == audit_cli.SANDBOX_FILE == "sandbox.json"
    assert layout.MAX_SANDBOX_FILE_BYTES == audit_cli.MAX_SANDBOX_FILE_BYTES
