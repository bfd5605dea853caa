"""``python -m ruta`` runs the ``ruta`` command line (used where the console script may not be on
``PATH``, e.g. by the sandbox when it starts its child processes)."""

from __future__ import annotations

from ruta.cli import main

if __name__ == "__main__":
    main()
