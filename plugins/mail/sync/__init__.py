"""Incoming mail: the IMAP session, the sync engine and its background jobs."""
