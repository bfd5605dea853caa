"""Create the example population register: a SQLite database of fictional persons and addresses.

``python -m adapters.examples.population.make_db FILE`` writes a fresh database at FILE (an
existing file is replaced). Every person and address is invented.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

__all__ = ["ADDRESSES", "PERSONS", "create_population_db"]

#: (national_id, given_name, family_name, birth_date)
PERSONS = (
    ("4410000017", "Ana Lucía", "Quispe Mamani", "1985-03-12"),
    ("4410000025", "Mateo", "Fernández Rojas", "1990-07-04"),
    ("4410000033", "Valentina", "Soto Pérez", "1978-11-23"),
    ("4410000041", "Diego", "Mendoza Luna", "2001-02-28"),
    ("4410000058", "Camila", "Ríos Vargas", "1969-09-30"),
)

#: (national_id, street, postal_code, city, valid_from, valid_to); valid_to NULL: current.
ADDRESSES = (
    ("4410000017", "Calle Los Olivos 12", "15001", "Villa Ruta", "2015-06-01", None),
    ("4410000025", "Av. Central 455, dpto. 3", "15002", "Villa Ruta", "2018-01-15", None),
    ("4410000033", "Jr. Las Flores 8", "15003", "Puerto Ejemplo", "2003-04-20", None),
    ("4410000041", "Pasaje Sol 3", "15001", "Villa Ruta", "2001-02-28", "2022-08-31"),
    ("4410000041", "Calle Nueva 77", "15004", "San Muestra", "2022-09-01", None),
)

_SCHEMA = """
CREATE TABLE persons (
    national_id TEXT PRIMARY KEY,
    given_name TEXT NOT NULL,
    family_name TEXT NOT NULL,
    birth_date TEXT NOT NULL
);
CREATE TABLE addresses (
    id INTEGER PRIMARY KEY,
    national_id TEXT NOT NULL REFERENCES persons (national_id),
    street TEXT NOT NULL,
    postal_code TEXT NOT NULL,
    city TEXT NOT NULL,
    valid_from TEXT NOT NULL,
    valid_to TEXT
);
CREATE INDEX addresses_by_person ON addresses (national_id);
"""


def create_population_db(path: Path) -> None:
    """Write a fresh example database at ``path`` (replacing any file there)."""
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.executescript(_SCHEMA)
            conn.executemany("INSERT INTO persons VALUES (?, ?, ?, ?)", PERSONS)
            conn.executemany(
                "INSERT INTO addresses (national_id, street, postal_code, city, valid_from,"
                " valid_to) VALUES (?, ?, ?, ?, ?, ?)",
                ADDRESSES,
            )
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    """Command line: ``make_db FILE``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m adapters.examples.population.make_db FILE", file=sys.stderr)  # noqa: T201
        return 2
    create_population_db(Path(args[0]))
    print(f"wrote {len(PERSONS)} fictional persons to {args[0]}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
