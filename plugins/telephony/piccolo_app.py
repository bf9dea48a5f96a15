from pathlib import Path

from piccolo.conf.apps import AppConfig

from plugins.telephony.tables import (
    TelephonyCall,
    TelephonyCallback,
    TelephonyExtension,
    TelephonySettings,
)

APP_CONFIG = AppConfig(
    app_name="telephony",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[TelephonySettings, TelephonyExtension, TelephonyCall, TelephonyCallback],
    migration_dependencies=["core.piccolo_app"],
)
