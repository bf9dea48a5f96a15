"""Root conftest: the shared fixtures serve both tests/ and every plugins/*/tests/."""

pytest_plugins = ["tests.fixtures"]
