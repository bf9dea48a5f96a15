"""The mail plugin's Piccolo app: its tables (incoming and outgoing) and migrations."""

from pathlib import Path

from piccolo.conf.apps import AppConfig, table_finder

APP_CONFIG = AppConfig(
    app_name="mail",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=table_finder(
        modules=["plugins.mail.tables", "plugins.mail.outgoing.tables"], exclude_imported=True
    ),
    migration_dependencies=["core.piccolo_app"],
)
