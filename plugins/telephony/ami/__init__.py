"""Asterisk Manager Interface: the wire format and an asyncio client."""
