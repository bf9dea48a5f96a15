"""Hooks of the mail plugin."""
