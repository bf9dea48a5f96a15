"""Web UI and JSON API."""
