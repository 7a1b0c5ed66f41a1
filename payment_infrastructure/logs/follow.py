"""Follow log files the way `tail -F` does: from the beginning, across truncation and rotation (a new inode),
waiting for a file that does not exist yet. Only complete lines are returned; a partial last line waits for its
newline."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO


@dataclass
class FollowedFile:
    path: Path
    _handle: BinaryIO | None = field(default=None, repr=False)
    _inode: int | None = None
    _partial: bytes = b""

    def read_lines(self, limit: int) -> list[bytes]:
        """Up to `limit` complete lines written since the last call (without their newlines)."""
        self._reopen_if_replaced()
        if self._handle is None:
            return []
        lines: list[bytes] = []
        while len(lines) < limit:
            chunk = self._handle.readline()
            if not chunk:
                break
            if not chunk.endswith(b"\n"):
                self._partial += chunk
                break
            line = (self._partial + chunk).rstrip(b"\r\n")
            self._partial = b""
            if line.strip():
                lines.append(line)
        return lines

    def _reopen_if_replaced(self) -> None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return  # not there yet, or rotated away: keep what is open until a new file appears
        if self._handle is not None and stat.st_ino == self._inode:
            if stat.st_size < self._handle.tell():  # truncated in place: start again from its beginning
                self._handle.seek(0)
                self._partial = b""
            return
        if self._handle is not None:
            self._handle.close()
        self._handle = self.path.open("rb")
        self._inode = stat.st_ino
        self._partial = b""

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
