"""Only single read-only SELECT statements pass the sql backend's query check."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.backends.sql import ReadOnlyQueryError, check_read_only


@pytest.mark.parametrize(
    ("query", "kept"),
    [
        ("SELECT 1", "SELECT 1"),
        ("select * from persons where id = :id;", "select * from persons where id = :id"),
        ("  -- who lives where\nSELECT a FROM t", "SELECT a FROM t"),
        ("WITH x AS (SELECT 1 AS a) SELECT a FROM x", "WITH x AS (SELECT 1 AS a) SELECT a FROM x"),
        # Keywords inside literals, quoted identifiers and comments are data, not statements.
        ("SELECT 'DROP TABLE t; --' AS txt", "SELECT 'DROP TABLE t; --' AS txt"),
        ('SELECT "update" FROM t /* DELETE */', 'SELECT "update" FROM t'),
        ("SELECT a::int FROM t WHERE b = 'it''s'", "SELECT a::int FROM t WHERE b = 'it''s'"),
    ],
)
def test_read_only_queries_pass(query: str, kept: str) -> None:
    assert check_read_only(query) == kept


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("DELETE FROM persons", "must start with SELECT or WITH"),
        ("UPDATE persons SET x = 1", "must start with SELECT or WITH"),
        ("PRAGMA writable_schema = 1", "must start with SELECT or WITH"),
        ("SELECT 1; DROP TABLE persons", "single statement"),
        ("SELECT 1; SELECT 2;", "single statement"),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "uses DELETE"),
        ("SELECT * INTO backup FROM persons", "uses INTO"),
        ("SELECT * FROM persons FOR UPDATE", "uses UPDATE"),
        ("SELECT set_config('x', 'y', false)", None),
        ("SELECT $$x$$", "dollar quoting"),
        ("SELECT 'unterminated", "unterminated"),
        ("SELECT 1 /* open comment", "unterminated"),
        ("", "must start with SELECT or WITH"),
        ("-- only a comment", "must start with SELECT or WITH"),
    ],
)
def test_other_statements_are_refused(query: str, reason: str | None) -> None:
    if reason is None:
        # Functions are not statements: the read-only transaction is what stops their writes.
        check_read_only(query)
        return
    with pytest.raises(ReadOnlyQueryError, match=reason):
        check_read_only(query)


_SQLISH = st.lists(
    st.sampled_from(
        [
            "SELECT",
            "WITH",
            "x",
            "'",
            '"',
            ";",
            "--",
            "/*",
            "*/",
            "\n",
            " ",
            "$",
            ":p",
            "DROP",
            "''",
            "(",
            "0",
        ]
    ),
    max_size=30,
).map("".join)


@given(query=st.one_of(st.text(max_size=80), _SQLISH))
def test_any_text_passes_or_is_refused_with_a_reason(query: str) -> None:
    """The check is total: any text either passes as one SELECT/WITH statement or is refused."""
    try:
        kept = check_read_only(query)
    except ReadOnlyQueryError:
        return
    assert re.match(r"(?i)(SELECT|WITH)(?![A-Za-z0-9_$])", kept)
