"""Hooks of the telephony plugin."""
