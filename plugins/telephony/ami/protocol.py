"""The AMI wire format, parsed incrementally from whatever bytes the socket delivers.

Asterisk sends a banner line, then blocks of ``Key: Value`` lines (CRLF) ended by an
empty line. Keys repeat (``Variable``, ``Output``), so a message is a list of pairs.
Old servers answer ``Action: Command`` with ``Response: Follows``, raw output lines
and ``--END COMMAND--``; that output is kept as ``Output`` pairs like newer servers
send it. A hostile or broken peer (garbage, a 10 MB line, endless headers) costs
at most the configured limits: the damaged block is dropped, the stream goes on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

BANNER_PREFIX = "Asterisk Call Manager/"
END_COMMAND = "--END COMMAND--"
MAX_LINE_BYTES = 64 * 1024
MAX_BLOCK_LINES = 2000
_FOLLOWS_HEADERS = {"privilege", "actionid"}


@dataclass
class AmiMessage:
    """One block: ``Event``, ``Response`` or ``Action`` plus its headers, in order."""

    pairs: list[tuple[str, str]] = field(default_factory=list)

    def get(self, key: str, default: str = "") -> str:
        wanted = key.lower()
        for name, value in self.pairs:
            if name.lower() == wanted:
                return value
        return default

    def get_all(self, key: str) -> list[str]:
        wanted = key.lower()
        return [value for name, value in self.pairs if name.lower() == wanted]

    def __contains__(self, key: str) -> bool:
        wanted = key.lower()
        return any(name.lower() == wanted for name, _ in self.pairs)

    @property
    def event(self) -> str:
        return self.get("Event")

    @property
    def response(self) -> str:
        return self.get("Response")

    @property
    def action_id(self) -> str:
        return self.get("ActionID")


def encode_action(action: str, fields: Iterable[tuple[str, str]]) -> bytes:
    """An action block; CR/LF in values would let a value inject headers, so they go."""
    lines = [f"Action: {action}"]
    for key, value in fields:
        clean = str(value).replace("\r", " ").replace("\n", " ")
        lines.append(f"{key}: {clean}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


class AmiParser:
    """Feed it bytes with `feed`; it returns the complete messages found so far."""

    def __init__(
        self, max_line_bytes: int = MAX_LINE_BYTES, max_block_lines: int = MAX_BLOCK_LINES
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self.max_block_lines = max_block_lines
        self.banner: str | None = None
        self.dropped_blocks = 0
        self._buffer = bytearray()
        self._skipping_line = False
        self._pairs: list[tuple[str, str]] = []
        self._damaged = False
        self._follows = False
        self._follows_output = False

    @property
    def version(self) -> str:
        """The AMI protocol version from the banner (``5.0.5``), empty before it."""
        if self.banner and self.banner.startswith(BANNER_PREFIX):
            return self.banner[len(BANNER_PREFIX) :].strip()
        return ""

    def feed(self, data: bytes) -> list[AmiMessage]:
        self._buffer += data
        messages: list[AmiMessage] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self.max_line_bytes:
                    # An endless line: forget it up to its end, and the block it is in.
                    self._buffer.clear()
                    self._skipping_line = True
                    self._damage()
                break
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._skipping_line:
                self._skipping_line = False
                continue
            if len(raw) > self.max_line_bytes:
                self._damage()
                continue
            message = self._line(raw.rstrip(b"\r").decode("utf-8", errors="replace"))
            if message is not None:
                messages.append(message)
        return messages

    def _damage(self) -> None:
        self._damaged = True

    def _line(self, line: str) -> AmiMessage | None:
        if self.banner is None and not self._pairs and line.startswith(BANNER_PREFIX):
            self.banner = line
            return None
        if line == "" and not (self._follows and self._follows_output):
            return self._finish()
        if len(self._pairs) >= self.max_block_lines:
            self._damage()
            return None
        if self._follows:
            return self._follows_line(line)
        key, sep, value = line.partition(":")
        if not sep or not key or " " in key.strip():
            self._damage()  # not a header: garbage in this block
            return None
        key, value = key.strip(), value.removeprefix(" ")
        self._pairs.append((key, value))
        if key.lower() == "response" and value.strip().lower() == "follows":
            self._follows = True
        return None

    def _follows_line(self, line: str) -> AmiMessage | None:
        """Inside ``Response: Follows``: a few headers, then raw output to the end marker."""
        if not self._follows_output:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() in _FOLLOWS_HEADERS:
                self._pairs.append((key.strip(), value.removeprefix(" ")))
                return None
            self._follows_output = True
        if line.endswith(END_COMMAND):
            text = line[: -len(END_COMMAND)]
            if text:
                self._pairs.append(("Output", text))
            self._follows_output = False
            self._follows = False
            return None
        self._pairs.append(("Output", line))
        return None

    def _finish(self) -> AmiMessage | None:
        pairs, damaged = self._pairs, self._damaged
        self._pairs, self._damaged = [], False
        self._follows = self._follows_output = False
        if damaged:
            self.dropped_blocks += 1
            return None
        if not pairs:
            return None  # blank lines between blocks
        return AmiMessage(pairs)
