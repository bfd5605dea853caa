"""The one log setup every ``ruta`` command shares: text or JSON lines, and the serving level."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from ruta.cli import main, serve_at_info_unless_chosen
from ruta.logs import MAX_JSON_MESSAGE_CHARS, configure_logging


@pytest.fixture
def restore_root() -> Iterator[None]:
    """Leave the root logger as the test found it (handlers and level)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root")
def test_json_lines_carry_the_fields_passed_as_extra() -> None:
    stream = io.StringIO()
    configure_logging(level="info", log_format="json", stream=stream)
    log = logging.getLogger("ruta.test")
    log.info("call %s\nsecond line", "/a.B/C", extra={"status": "OK", "duration_ms": 7})
    log.debug("not at info")
    try:
        raise ValueError("boom")  # noqa: TRY301
    except ValueError:
        log.exception("failed")
    log.warning("x" * (MAX_JSON_MESSAGE_CHARS + 10))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first["message"] == "call /a.B/C\nsecond line"
    assert (first["level"], first["logger"], first["status"], first["duration_ms"]) == (
        "info",
        "ruta.test",
        "OK",
        7,
    )
    assert first["time"].endswith("+00:00")
    assert second["level"] == "error"
    assert "ValueError: boom" in second["exception"]
    assert len(third["message"]) == MAX_JSON_MESSAGE_CHARS


@pytest.mark.usefixtures("restore_root")
def test_text_lines_and_a_second_call_replaces_the_first_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(level="warning", log_format="json", stream=first)
    configure_logging(level="warning", log_format="text", stream=second)
    logging.getLogger("ruta.test").warning("once %d", 1)
    assert first.getvalue() == ""
    assert second.getvalue().rstrip().endswith(" WARNING ruta.test once 1")


@pytest.mark.parametrize(("level", "log_format"), [("loud", "text"), ("info", "xml")])
def test_unknown_level_or_format_is_refused(level: str, log_format: str) -> None:
    with pytest.raises(ValueError, match="must be one of"):
        configure_logging(level=level, log_format=log_format)


@click.command("probe-level")
def _probe_level() -> None:
    serve_at_info_unless_chosen()
    click.echo(logging.getLevelName(logging.getLogger().level))


@pytest.fixture
def probe_command() -> Iterator[None]:
    """``ruta probe-level``: a server command's view of the level, for this test only."""
    main.add_command(_probe_level)
    yield
    main.commands.pop("probe-level")


@pytest.mark.usefixtures("restore_root", "probe_command")
@pytest.mark.parametrize(
    ("args", "env", "level"),
    [
        ([], {}, "INFO"),
        (["--log-level", "warning"], {}, "WARNING"),
        (["--log-level", "debug"], {}, "DEBUG"),
        ([], {"RUTA_LOG_LEVEL": "error"}, "ERROR"),
    ],
)
def test_servers_log_at_info_unless_a_level_was_chosen(
    args: list[str], env: dict[str, str], level: str
) -> None:
    result = CliRunner().invoke(main, [*args, "probe-level"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == level


def test_serving_level_outside_the_ruta_command_changes_nothing() -> None:
    root = logging.getLogger()
    before = root.level
    serve_at_info_unless_chosen()
    assert root.level == before
