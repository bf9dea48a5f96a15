from pathlib import Path

from piccolo.conf.apps import AppConfig

from tests.plugins.sample.tables import SampleMark

APP_CONFIG = AppConfig(
    app_name="sample",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[SampleMark],
    migration_dependencies=["core.piccolo_app"],
)
