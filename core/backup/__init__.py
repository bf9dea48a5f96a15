"""Backups of the install into an encrypted restic repository, and proof that they restore."""
