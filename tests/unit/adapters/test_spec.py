"""The adapter file: schema, kind-specific keys, environment variables, errors with lines."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.errors import AdapterConfigError
from adapters.spec import (
    _KIND_KEYS,
    CsvBackendSpec,
    FieldSpec,
    MethodSpec,
    SqlBackendSpec,
    load_adapter_file,
    parse_adapter_text,
    parse_listen,
)
from ruta.faults import Fault

VALID = """\
[adapter]
service = "population.v1.PopulationRegister"
proto = "population.proto"

[backends.db]
kind = "sql"
url = "sqlite+aiosqlite:///pop.db"

[methods.GetPerson]
backend = "db"
query = "SELECT * FROM persons WHERE national_id = :national_id"

[methods.GetPerson.fields]
address = { from = "addr", default = "none" }
given_name = "first_name"
"""


def test_valid_file_parses_with_defaults() -> None:
    spec = parse_adapter_text(VALID)
    assert spec.adapter.service == "population.v1.PopulationRegister"
    assert spec.server.listen == "127.0.0.1:50070"
    backend = spec.backends["db"]
    assert isinstance(backend, SqlBackendSpec)
    assert backend.max_rows == 1000
    method = spec.methods["GetPerson"]
    assert method.expect == "one"
    assert method.fields["given_name"] == "first_name"
    field = method.fields["address"]
    assert isinstance(field, FieldSpec)
    assert field.from_ == "addr"
    assert field.default == "none"


@pytest.mark.parametrize(
    ("edit", "line", "field"),
    [
        # a missing required key is reported at its table's header
        (
            ('kind = "sql"\n', 'kind = "sql"\n', 'url = "sqlite+aiosqlite:///pop.db"\n', ""),
            5,
            "url",
        ),
        # a wrong value is reported on its own line
        (('backend = "db"\n', 'backend = "db"\ntimeout_seconds = -1\n'), 11, "timeout_seconds"),
        (
            ("[methods.GetPerson.fields]\n", '[methods.GetPerson.fields]\nx = "not a path!"\n'),
            14,
            "x",
        ),
        (
            (
                'url = "sqlite+aiosqlite:///pop.db"\n',
                'url = "sqlite+aiosqlite:///pop.db"\nmax_rows = 0\n',
            ),
            8,
            "max_rows",
        ),
        # an unknown key is an error, not ignored
        (('kind = "sql"\n', 'kind = "sql"\nusername = "x"\n'), 7, "username"),
    ],
)
def test_errors_name_line_and_field(edit: tuple[str, ...], line: int, field: str) -> None:
    text = VALID
    text = text.replace(edit[2], edit[3]) if len(edit) == 4 else text.replace(edit[0], edit[1], 1)
    with pytest.raises(AdapterConfigError) as caught:
        parse_adapter_text(text, name="adapter file x.toml")
    message = caught.value.message
    assert f"line {line}: " in message
    assert field in message
    assert caught.value.fault is Fault.CLIENT_INVALID_CONFIG


@pytest.mark.parametrize(
    ("method_lines", "expected"),
    [
        ('path = "/x"\n', "methods.GetPerson.path: only for rest backends, not sql"),
        ('operation = "Op"\n', "methods.GetPerson.operation: only for soap backends"),
        ('lookup = "id"\n', "methods.GetPerson.lookup: only for csv backends"),
    ],
)
def test_keys_of_another_kind_are_refused(method_lines: str, expected: str) -> None:
    text = VALID.replace('backend = "db"\n', f'backend = "db"\n{method_lines}')
    with pytest.raises(AdapterConfigError, match=expected) as caught:
        parse_adapter_text(text)
    assert "line 11: " in caught.value.message


def test_unknown_backend_and_missing_query_are_named() -> None:
    text = VALID.replace('backend = "db"', 'backend = "nope"')
    with pytest.raises(AdapterConfigError, match=r"line 10: methods.GetPerson.backend: no backend"):
        parse_adapter_text(text)
    text = VALID.replace('query = "SELECT * FROM persons WHERE national_id = :national_id"', "")
    with pytest.raises(AdapterConfigError, match=r"methods\.GetPerson\.query: required for a sql"):
        parse_adapter_text(text)


def test_exactly_one_descriptor_source() -> None:
    text = VALID.replace('proto = "population.proto"', 'proto = "a.proto"\ndescriptor_set = "a.pb"')
    with pytest.raises(AdapterConfigError, match="exactly one of 'proto' or 'descriptor_set'"):
        parse_adapter_text(text)


def test_environment_variables_fill_backends_and_stay_out_of_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POP_DB_PASSWORD", "hunter2-secret")
    text = VALID.replace(
        'url = "sqlite+aiosqlite:///pop.db"',
        'url = "postgresql+psycopg://pop:${POP_DB_PASSWORD}@db/${POP_DB_NAME:-population}"',
    )
    spec = parse_adapter_text(text)
    backend = spec.backends["db"]
    assert isinstance(backend, SqlBackendSpec)
    assert backend.url.get_secret_value() == "postgresql+psycopg://pop:hunter2-secret@db/population"
    assert "hunter2" not in repr(spec)
    # A schema error next to the secret never echoes it.
    broken = text.replace("max_rows", "x").replace(
        'kind = "sql"', 'kind = "sql"\npool_size = "many"'
    )
    with pytest.raises(AdapterConfigError) as caught:
        parse_adapter_text(broken)
    assert "hunter2" not in str(caught.value)


def test_missing_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    text = VALID.replace("///pop.db", "///${NOT_SET_ANYWHERE}")
    with pytest.raises(
        AdapterConfigError, match=r"backends\.db\.url: environment variable NOT_SET"
    ):
        parse_adapter_text(text)
    escaped = parse_adapter_text(VALID.replace("pop.db", "p$$op.db")).backends["db"]
    assert isinstance(escaped, SqlBackendSpec)
    assert escaped.url.get_secret_value().endswith("p$op.db")


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(AdapterConfigError, match=r"not valid TOML: .*line 2"):
        parse_adapter_text('[adapter]\nservice = "x\n')


def test_load_names_file_not_path(tmp_path: Path) -> None:
    with pytest.raises(AdapterConfigError) as caught:
        load_adapter_file(tmp_path / "missing.toml")
    assert "missing.toml does not exist" in caught.value.message
    assert str(tmp_path) not in caught.value.message
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(AdapterConfigError, match="the limit is"):
        load_adapter_file(big)
    good = tmp_path / "good.toml"
    good.write_text(VALID, encoding="utf-8")
    loaded = load_adapter_file(good)
    assert loaded.resolve("population.proto") == tmp_path.resolve() / "population.proto"


def test_csv_defaults() -> None:
    text = VALID.replace(
        'kind = "sql"\nurl = "sqlite+aiosqlite:///pop.db"',
        'kind = "csv"\npath = "p.csv"\nkey = "id"',
    ).replace('query = "SELECT * FROM persons WHERE national_id = :national_id"', "")
    backend = parse_adapter_text(text).backends["db"]
    assert isinstance(backend, CsvBackendSpec)
    assert backend.delimiter == ","


@pytest.mark.parametrize(
    ("listen", "ok"),
    [
        ("127.0.0.1:50070", True),
        ("[::1]:0", True),
        ("localhost", False),
        (":80", False),
        ("h:99999", False),
    ],
)
def test_parse_listen(listen: str, ok: bool) -> None:
    if ok:
        assert parse_listen(listen)[0]
    else:
        with pytest.raises(ValueError, match=r"listen address|out of range"):
            parse_listen(listen)


_TOML_BITS = st.sampled_from(
    [
        "[adapter]\n",
        'service = "a.B"\n',
        'proto = "a.proto"\n',
        "[backends.db]\n",
        'kind = "sql"\n',
        'kind = "csv"\n',
        'url = "sqlite+aiosqlite:///x"\n',
        "[methods.M]\n",
        'backend = "db"\n',
        'query = "SELECT 1"\n',
        "fields = { a = 1 }\n",
        'x = "${NOPE}"\n',
        "[[methods]]\n",
        "= broken\n",
        "timeout_seconds = -1\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.lists(_TOML_BITS, max_size=14).map("".join), st.text(max_size=200)))
def test_any_text_parses_or_is_refused_with_a_config_error(text: str) -> None:
    """Whatever the file holds, loading it returns a model or raises AdapterConfigError."""
    with contextlib.suppress(AdapterConfigError):
        parse_adapter_text(text)


def test_the_guide_lists_every_method_key_with_its_kind() -> None:
    """docs/guides/legacy-systems.md documents each method key: the common ones in one table,
    each kind's own in another, so the guide cannot drift from the file's schema."""
    guide = Path(__file__).resolve().parents[3] / "docs" / "guides" / "legacy-systems.md"
    text = guide.read_text(encoding="utf-8")
    for kind, keys in _KIND_KEYS.items():
        for key in keys:
            assert f"| {kind} | `{key}` |" in text, f"{kind} key {key} is not in the guide"
    own = frozenset().union(*_KIND_KEYS.values())
    for name, field in MethodSpec.model_fields.items():
        key = field.alias or name
        if key not in own:
            assert f"| `{key}` |" in text, f"method key {key} is not in the guide"


@pytest.mark.parametrize("pattern", ["[[a]", "[a--b]", "[a&&b]", "[a||b]", "[a~~b]"])
def test_an_ambiguous_pattern_is_refused(pattern: str) -> None:
    """Found by fuzzing: a set that a later Python reads differently made re.compile warn
    (FutureWarning), which escaped the parser instead of its AdapterConfigError."""
    text = VALID.replace(
        'backend = "db"\n', f'backend = "db"\npatterns = {{ national_id = "{pattern}" }}\n'
    )
    with pytest.raises(AdapterConfigError) as info:
        parse_adapter_text(text)
    assert "not a regular expression" in info.value.message
