from core.hookspecs import hookimpl


@hookimpl
def piccolo_apps() -> list[str]:
    return ["tests.plugins.broken_migration.piccolo_app"]
