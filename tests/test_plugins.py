"""Finding, resolving, enabling and disabling plugins."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import cli
from core.manifest import PluginManifest
from core.plugins import InstalledPlugin, PluginError, check_loadable, discover, resolve


def _plugin(
    name: str, depends: tuple[str, ...] = (), requires_bin: tuple[str, ...] = ()
) -> InstalledPlugin:
    manifest = PluginManifest(
        name=name,
        version="1",
        summary=name,
        hooks=f"x.{name}",
        depends=depends,
        requires_bin=requires_bin,
    )
    return InstalledPlugin(manifest=manifest, package=f"x.{name}")


INSTALLED = {
    "warehouse": _plugin("warehouse"),
    "one_c": _plugin("one_c", depends=("warehouse",)),
    "kpi": _plugin("kpi"),
}


def test_resolve_puts_dependencies_first() -> None:
    assert [p.name for p in resolve(["one_c", "kpi"], INSTALLED)] == ["warehouse", "one_c", "kpi"]


def test_resolve_names_the_missing_plugin_and_who_needs_it() -> None:
    installed = {"one_c": _plugin("one_c", depends=("warehouse",))}
    with pytest.raises(PluginError, match=r"'warehouse' \(needed by one_c\) is not installed"):
        resolve(["one_c"], installed)


def test_resolve_detects_cycles() -> None:
    installed = {"a": _plugin("a", depends=("b",)), "b": _plugin("b", depends=("a",))}
    with pytest.raises(PluginError, match="cycle: a -> b -> a"):
        resolve(["a"], installed)


def test_missing_binary_is_refused() -> None:
    with pytest.raises(PluginError, match="needs no-such-binary-kt on PATH"):
        check_loadable([_plugin("backup", requires_bin=("no-such-binary-kt",))])


@pytest.fixture
def external_plugin(tmp_path: Path) -> Iterator[str]:
    """A plugin installed like a customer's own package: a distribution with an entry point."""
    package = tmp_path / "acme_plugin"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from core.manifest import PluginManifest
            MANIFEST = PluginManifest(name="acme", version="2.0", summary="Customer plugin",
                                      hooks="acme_plugin.hooks", depends=("sample",))
            """
        )
    )
    (package / "hooks.py").write_text(
        "from core import hookimpl\n\n@hookimpl\ndef backup_items():\n    return []\n"
    )
    dist = tmp_path / "acme_plugin-2.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-plugin\nVersion: 2.0\n")
    (dist / "entry_points.txt").write_text("[kartoteka.plugins]\nacme = acme_plugin\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield "acme"
    finally:
        sys.path.remove(str(tmp_path))
        for module in ("acme_plugin", "acme_plugin.hooks"):
            sys.modules.pop(module, None)


def test_entry_point_plugin_is_discovered_and_loaded(external_plugin: str) -> None:
    from core.plugins import load_enabled

    installed = discover(["tests.plugins.sample"])
    assert installed["acme"].manifest.version == "2.0"
    loaded = load_enabled(["acme"], ["tests.plugins.sample"])
    assert loaded.names == ["sample", "acme"], "dependency loaded first"


@pytest.fixture
def settings_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, external_plugin: str, runtime: object
) -> Iterator[Path]:
    """CLI runs against its own data dir (and database) with no plugins enabled."""
    from core import runtime as runtime_module
    from core.settings import reload_settings

    previous = runtime_module._current
    monkeypatch.setenv("KARTOTEKA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("KARTOTEKA_PLUGINS", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(
        "core.plugins.discover",
        lambda extra_packages=(): discover(["tests.plugins.sample", *extra_packages]),
    )
    monkeypatch.setattr(cli, "discover", lambda: discover(["tests.plugins.sample"]))
    reload_settings()
    runtime_module.set_runtime(None)
    yield tmp_path / "data"
    monkeypatch.undo()
    reload_settings()
    runtime_module.set_runtime(previous)
    from core.db import bind_tables

    bind_tables()  # migrating the CLI's database pointed the tables there


def test_cli_enable_resolves_dependencies_and_migrates(
    settings_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.settings import read_settings_file

    assert cli.main(["plugins", "enable", "acme"]) == 0
    out = capsys.readouterr().out
    assert "acme depends on sample: enabling sample too" in out
    assert "First admin login" in out
    assert read_settings_file(settings_dir / "kartoteka.toml")["plugins"] == ["sample", "acme"]
    import sqlite3

    tables = {
        row[0]
        for row in sqlite3.connect(settings_dir / "kartoteka.sqlite3").execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }
    assert "sample_mark" in tables, "enabling ran the plugin's migrations"

    assert cli.main(["plugins", "list"]) == 0
    listing = capsys.readouterr().out
    assert "enabled   acme 2.0" in listing

    assert cli.main(["plugins", "disable", "sample"]) == 2, "acme still needs sample"
    assert "acme depend(s) on sample" in capsys.readouterr().err
    assert cli.main(["plugins", "disable", "acme"]) == 0
    assert read_settings_file(settings_dir / "kartoteka.toml")["plugins"] == ["sample"]
    assert "sample_mark" in {
        row[0]
        for row in sqlite3.connect(settings_dir / "kartoteka.sqlite3").execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }, "disabling keeps the data"
    audit = sqlite3.connect(settings_dir / "kartoteka.sqlite3").execute(
        "SELECT action, object_id, actor_name FROM core_audit WHERE action LIKE 'plugin.%' "
        "ORDER BY id"
    )
    rows = list(audit)
    assert [(a, o) for a, o, _who in rows] == [
        ("plugin.enable", "sample"),
        ("plugin.enable", "acme"),
        ("plugin.disable", "acme"),
    ]
    assert all(who.startswith("cli:") for _a, _o, who in rows), "the operator is named"


def test_cli_recovers_a_locked_out_admin(
    settings_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    assert cli.main(["migrate"]) == 0
    capsys.readouterr()
    assert cli.main(["users", "reset-password", "admin"]) == 0
    assert "temporary password for admin" in capsys.readouterr().out
    db = sqlite3.connect(settings_dir / "kartoteka.sqlite3")
    assert db.execute("SELECT must_change_password FROM core_user").fetchone() == (1,)
    assert db.execute("SELECT totp_secret FROM core_user").fetchone() == ("",)
    assert cli.main(["users", "reset-totp", "admin"]) == 0
    assert "was not set up" in capsys.readouterr().out
    actions = [row[0] for row in db.execute("SELECT action FROM core_audit ORDER BY id")]
    assert "user.password_reset" in actions
    assert cli.main(["users", "reset-password", "nobody"]) == 2


def test_cli_enable_unknown_plugin_fails_clearly(
    settings_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["plugins", "enable", "nope"]) == 2
    assert "plugin 'nope' is not installed" in capsys.readouterr().err
