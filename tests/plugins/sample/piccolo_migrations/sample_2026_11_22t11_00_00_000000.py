from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.base import OnDelete
from piccolo.columns.column_types import ForeignKey, Varchar
from piccolo.table import Table

ID = "2026-11-22T11:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "sample marks"


class Client(Table, tablename="core_client"):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="sample", description=DESCRIPTION)
    manager.add_table(class_name="SampleMark", tablename="sample_mark")
    manager.add_column(
        table_class_name="SampleMark",
        tablename="sample_mark",
        column_name="client",
        db_column_name="client",
        column_class_name="ForeignKey",
        column_class=ForeignKey,
        params={"references": Client, "on_delete": OnDelete.cascade, "null": True},
    )
    manager.add_column(
        table_class_name="SampleMark",
        tablename="sample_mark",
        column_name="label",
        db_column_name="label",
        column_class_name="Varchar",
        column_class=Varchar,
        params={"length": 64, "default": ""},
    )
    return manager
