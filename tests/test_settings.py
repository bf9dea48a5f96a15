"""Settings: environment over the settings file over defaults; secrets from files."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import SettingsError, load_settings, write_settings_file


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("DATABASE_URL", "BROKER_URL", "KARTOTEKA_PLUGINS", "KARTOTEKA_LOCALE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KARTOTEKA_DATA_DIR", str(tmp_path))
    return tmp_path


def test_secrets_come_from_files(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = data_dir / "db-url"
    secret.write_text("postgresql://crm:s3cret@db:5432/crm\n")
    monkeypatch.setenv("DATABASE_URL_FILE", str(secret))
    assert load_settings().database_url == "postgresql://crm:s3cret@db:5432/crm"
    monkeypatch.setenv("DATABASE_URL", "postgresql://direct@db/crm")
    assert load_settings().database_url == "postgresql://direct@db/crm", "the variable wins"


def test_unreadable_secret_file_is_a_clear_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KARTOTEKA_SECRET_KEY_FILE", str(data_dir / "missing"))
    with pytest.raises(SettingsError, match="KARTOTEKA_SECRET_KEY_FILE: cannot read"):
        load_settings()


def test_environment_beats_file_beats_default(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_settings_file(data_dir / "kartoteka.toml", {"backup_keep_daily": 3, "port": 9000})
    monkeypatch.setenv("KARTOTEKA_PORT", "9100")
    settings = load_settings()
    assert (settings.backup_keep_daily, settings.port, settings.backup_keep_weekly) == (3, 9100, 4)
    write_settings_file(data_dir / "kartoteka.toml", {"backup_keep_daily": "seven"})
    with pytest.raises(SettingsError, match="backup_keep_daily must be a whole number"):
        load_settings()
