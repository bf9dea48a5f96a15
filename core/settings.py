"""Install-wide configuration.

Values come from, in order of precedence: environment variables, the settings file
(``$KARTOTEKA_DATA_DIR/kartoteka.toml`` or ``$KARTOTEKA_SETTINGS``), defaults. The
settings file is the one place `kartoteka plugins enable|disable` writes to, so an
install keeps its plugin set across restarts and upgrades.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import tomli_w

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A setting has a value the app cannot start with."""


def _env(name: str) -> str | None:
    """``NAME``, or the content of the file named by ``NAME_FILE`` (container secrets)."""
    value = os.environ.get(name)
    if value not in (None, ""):
        return value
    secret_file = os.environ.get(name + "_FILE")
    if not secret_file:
        return None
    try:
        return Path(secret_file).read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise SettingsError(f"{name}_FILE: cannot read {secret_file}: {exc.strerror}") from None


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [str(item) for item in value or []]


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    broker_url: str
    secret_key: str
    plugins: list[str]
    theme: str
    default_locale: str
    languages: list[str]
    default_region: str
    default_currency: str
    timezone: str
    max_upload_mb: int
    host: str
    port: int
    web_workers: int
    debug: bool
    secure_cookies: bool
    """Mark cookies Secure even when the app sees plain HTTP (behind a TLS proxy)."""
    login_failures_per_account: int
    login_failures_per_address: int
    login_lockout_minutes: int
    anomaly_cards_per_hour: int
    """Client cards viewed plus rows exported in an hour that raise an alert."""
    backup_repository: str
    """restic repository (path, sftp:, rest:, s3:); empty switches backups off."""
    backup_password_file: str
    backup_schedule: str
    backup_check_schedule: str
    backup_keep_daily: int
    backup_keep_weekly: int
    backup_keep_monthly: int
    backup_max_age_hours: int
    """Older than this, the last good backup (or verification) turns the banner red."""
    settings_file: Path
    file_values: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def embedded(self) -> bool:
        """Jobs run inside the web process on a SQLite-backed queue."""
        return not self.broker_url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path:
        return Path(self.database_url.split("///", 1)[1])

    @property
    def attachments_dir(self) -> Path:
        return self.data_dir / "attachments"

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024


# (setting name, environment variable, default); the file uses the setting name as key.
_SPEC: list[tuple[str, str, Any]] = [
    ("database_url", "DATABASE_URL", None),
    ("broker_url", "BROKER_URL", ""),
    ("secret_key", "KARTOTEKA_SECRET_KEY", None),
    ("plugins", "KARTOTEKA_PLUGINS", []),
    ("theme", "KARTOTEKA_THEME", "default"),
    ("default_locale", "KARTOTEKA_LOCALE", "ru"),
    ("languages", "KARTOTEKA_LANGUAGES", ["ru", "en"]),
    ("default_region", "KARTOTEKA_PHONE_REGION", "RU"),
    ("default_currency", "KARTOTEKA_CURRENCY", "RUB"),
    ("timezone", "KARTOTEKA_TIMEZONE", "Europe/Moscow"),
    ("max_upload_mb", "KARTOTEKA_MAX_UPLOAD_MB", 25),
    ("host", "KARTOTEKA_HOST", "127.0.0.1"),
    ("port", "KARTOTEKA_PORT", 8000),
    ("web_workers", "KARTOTEKA_WEB_WORKERS", 1),
    ("debug", "KARTOTEKA_DEBUG", False),
    ("secure_cookies", "KARTOTEKA_SECURE_COOKIES", False),
    ("login_failures_per_account", "KARTOTEKA_LOGIN_FAILURES_PER_ACCOUNT", 5),
    ("login_failures_per_address", "KARTOTEKA_LOGIN_FAILURES_PER_ADDRESS", 20),
    ("login_lockout_minutes", "KARTOTEKA_LOGIN_LOCKOUT_MINUTES", 15),
    ("anomaly_cards_per_hour", "KARTOTEKA_ANOMALY_CARDS_PER_HOUR", 300),
    ("backup_repository", "KARTOTEKA_BACKUP_REPOSITORY", ""),
    ("backup_password_file", "KARTOTEKA_BACKUP_PASSWORD_FILE", ""),
    ("backup_schedule", "KARTOTEKA_BACKUP_SCHEDULE", "30 2 * * *"),
    ("backup_check_schedule", "KARTOTEKA_BACKUP_CHECK_SCHEDULE", "0 4 * * 0"),
    ("backup_keep_daily", "KARTOTEKA_BACKUP_KEEP_DAILY", 7),
    ("backup_keep_weekly", "KARTOTEKA_BACKUP_KEEP_WEEKLY", 4),
    ("backup_keep_monthly", "KARTOTEKA_BACKUP_KEEP_MONTHLY", 12),
    ("backup_max_age_hours", "KARTOTEKA_BACKUP_MAX_AGE_HOURS", 26),
]
_NUMBERS = [
    "max_upload_mb",
    "port",
    "web_workers",
    "login_failures_per_account",
    "login_failures_per_address",
    "login_lockout_minutes",
    "anomaly_cards_per_hour",
    "backup_keep_daily",
    "backup_keep_weekly",
    "backup_keep_monthly",
    "backup_max_age_hours",
]
SETTING_NAMES = [name for name, _, _ in _SPEC]


def settings_file_path(data_dir: Path) -> Path:
    explicit = _env("KARTOTEKA_SETTINGS")
    return Path(explicit) if explicit else data_dir / "kartoteka.toml"


def read_settings_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: {exc}") from exc


def write_settings_file(path: Path, values: dict[str, Any]) -> None:
    """Atomically replace the settings file, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(tomli_w.dumps(values), encoding="utf-8")
    os.replace(tmp, path)


def _ensure_secret_key(data_dir: Path) -> str:
    """A random per-install key kept in the data dir: stable across restarts, never in git."""
    key_file = data_dir / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    key_file.write_text(key)
    key_file.chmod(0o600)
    return key


def load_settings() -> Settings:
    data_dir = Path(_env("KARTOTEKA_DATA_DIR") or PROJECT_ROOT / "var").resolve()
    path = settings_file_path(data_dir)
    file_values = read_settings_file(path)
    unknown = set(file_values) - set(SETTING_NAMES)
    if unknown:
        raise SettingsError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")

    values: dict[str, Any] = {}
    for name, env_name, default in _SPEC:
        env_value = _env(env_name)
        values[name] = env_value if env_value is not None else file_values.get(name, default)

    database_url = values["database_url"] or f"sqlite:///{data_dir / 'kartoteka.sqlite3'}"
    if database_url.startswith("postgres://"):
        database_url = "postgresql://" + database_url.removeprefix("postgres://")
    if not database_url.startswith(("sqlite:///", "postgresql://")):
        raise SettingsError("DATABASE_URL must start with sqlite:/// or postgresql://")
    broker_url = values["broker_url"] or ""
    if broker_url and not broker_url.startswith(("redis://", "rediss://", "amqp://", "amqps://")):
        raise SettingsError("BROKER_URL must be a redis:// or amqp:// URL (or empty)")
    numbers: dict[str, int] = {}
    for name in _NUMBERS:
        try:
            numbers[name] = int(values[name])
        except (TypeError, ValueError):
            raise SettingsError(f"{name} must be a whole number, not {values[name]!r}") from None
    languages = _as_list(values["languages"])
    if values["default_locale"] not in languages:
        raise SettingsError(f"default_locale {values['default_locale']!r} is not in {languages}")

    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        broker_url=broker_url,
        secret_key=values["secret_key"] or _ensure_secret_key(data_dir),
        plugins=_as_list(values["plugins"]),
        theme=str(values["theme"]),
        default_locale=str(values["default_locale"]),
        languages=languages,
        default_region=str(values["default_region"]).upper(),
        default_currency=str(values["default_currency"]).upper(),
        timezone=str(values["timezone"]),
        host=str(values["host"]),
        debug=_as_bool(values["debug"]),
        secure_cookies=_as_bool(values["secure_cookies"]),
        backup_repository=str(values["backup_repository"]),
        backup_password_file=str(values["backup_password_file"]),
        backup_schedule=str(values["backup_schedule"]),
        backup_check_schedule=str(values["backup_check_schedule"]),
        **numbers,
        settings_file=path,
        file_values=file_values,
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reload_settings() -> Settings:
    get_settings.cache_clear()
    return get_settings()
