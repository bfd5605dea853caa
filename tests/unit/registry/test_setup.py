"""registry init keeps database passwords out of registry.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.settings import RegistryLayout
from registry.setup import initialise_registry
from ruta.settings import ConfigError

_SECRET = "s3cret-pw"


async def test_a_db_url_with_a_password_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "registry"
    with pytest.raises(ConfigError, match="RUTA_REGISTRY_DATABASE_URL") as caught:
        await initialise_registry(
            directory,
            instance="LAC",
            db_url=f"postgresql://ruta:{_SECRET}@127.0.0.1/ruta",
        )
    assert _SECRET not in str(caught.value)
    assert not RegistryLayout(directory).settings.exists()


@pytest.mark.postgres
async def test_a_password_from_the_environment_stays_out_of_the_settings_file(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Trust authentication ignores the password; the point is where the URL ends up.
    with_password = postgres_url.replace("postgres@", f"postgres:{_SECRET}@", 1)
    assert _SECRET in with_password
    monkeypatch.setenv("RUTA_REGISTRY_DATABASE_URL", with_password)
    made = await initialise_registry(
        tmp_path / "registry", instance="LAC", http_listen="127.0.0.1:4480"
    )
    text = made.layout.settings.read_text()
    assert _SECRET not in text
    assert "database_url" not in text
