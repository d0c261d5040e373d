"""A journal file that survives a writer killed mid-write: Optuna's ``JournalFileBackend`` through its public API.

Optuna appends each batch of records as JSON lines under a file lock. A writer killed (or a disk filled) in the
middle of a write leaves a torn last line: a prefix of a record, with no newline. Optuna's reader skips such a
last line, but its next append starts right after it, so the torn bytes and the new record become one line that
is not JSON, and every later read of the journal raises: the study is unreadable for good.

``TornTailJournalFileBackend`` drops a torn record (one warning: its writer never finished, so nothing ever counted
on it): its next append cuts the torn line off under the file lock, so appends start on a new line and the file
stays a journal Optuna's own reader takes. It also reads a journal a plain ``JournalFileBackend`` has appended to
after a torn line (the torn bytes and a whole record on one line): the record is kept. Any other damage (a line
that is not the beginning of a JSON object, bytes that are not UTF-8) is refused with one line naming the file
and the place.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalFileSymlinkLock

from ..errors import CicyError

log = logging.getLogger(__name__)


def is_torn(line: bytes) -> bool:
    """Whether ``line`` (without its newline) is what a write cut short leaves: the start of a JSON object.

    ``json`` stops at the first character it cannot use; for a prefix of a record that is the end of the text,
    or an opening quote whose string never ends.
    """
    text = line.rstrip(b"\r\n")
    if not text.lstrip().startswith(b"{"):
        return not text.strip()  # an empty line: a write that stopped after nothing
    try:
        json.loads(text)
    except UnicodeDecodeError:
        return False
    except json.JSONDecodeError as e:
        return e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")
    return False  # a whole record


class TornTailJournalFileBackend(JournalFileBackend):
    """``JournalFileBackend`` that drops a torn record (one warning) and appends after a newline.

    Args:
        file_path: the journal file (created if missing).
        lock_obj: the file lock, as for ``JournalFileBackend`` (default: ``JournalFileSymlinkLock``).

    Example::

        storage = optuna.storages.JournalStorage(TornTailJournalFileBackend("optuna.log"))
    """

    def __init__(self, file_path: str, lock_obj: JournalFileSymlinkLock | JournalFileOpenLock | None = None) -> None:
        self._append_lock = lock_obj or JournalFileSymlinkLock(file_path)
        super().__init__(file_path, self._append_lock)
        self._path = file_path
        self._offsets: dict[int, int] = {0: 0}  # record number -> byte offset of its line (torn lines skipped)
        self._warned: set[int] = set()  # byte offsets of the torn records already reported

    def _warn_torn(self, offset: int, size: int) -> None:
        if offset not in self._warned:
            self._warned.add(offset)
            log.warning(
                "Optuna journal %s: dropped a torn record (%d bytes at byte %d) that a writer stopped in the middle of",
                self._path, size, offset,
            )  # fmt: skip

    def _after_torn(self, line: bytes, offset: int, error: Exception) -> dict | None:
        """A line that is not one record: a torn record alone (None), or a torn record with a whole one appended
        right after it (by Optuna's own writer, which does not look for a torn line): that record. Else damage."""
        if is_torn(line):
            self._warn_torn(offset, len(line) - 1)
            return None
        cut = line.find(b"{", 1)
        while cut > 0:
            try:
                record = json.loads(line[cut:])
            except (UnicodeDecodeError, json.JSONDecodeError):
                cut = line.find(b"{", cut + 1)
                continue
            if isinstance(record, dict) and is_torn(line[:cut]):
                self._warn_torn(offset, cut)
                return record
            break
        where = f"{error.msg} at column {error.pos + 1}" if isinstance(error, json.JSONDecodeError) else "not UTF-8"
        raise CicyError(
            f"Optuna journal {self._path}: the line at byte {offset} is damaged ({where}), "
            "not a record a crash cut short: restore the file from a copy"
        ) from None

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        number = log_number_from if log_number_from in self._offsets else 0
        offset = self._offsets[number]
        with open(self._path, "rb") as f:
            end = os.fstat(f.fileno()).st_size  # what a writer appends meanwhile is for the next read
            f.seek(offset)
            while offset < end:
                line = f.readline()
                if offset + len(line) > end or not line.endswith(b"\n"):
                    break  # a write in progress, or a torn last line: not read (the next append cuts it off)
                try:
                    record = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    record = self._after_torn(line, offset, e)
                    if record is None:  # a torn line on its own
                        offset += len(line)
                        continue
                offset += len(line)
                number += 1
                self._offsets[number] = offset
                if number > log_number_from:
                    yield record

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in logs).encode("utf-8")
        self._append_lock.acquire()  # every append holds it: no write is in progress, an unterminated line is torn
        try:
            with open(self._path, "a+b") as f:
                size = f.seek(0, os.SEEK_END)
                if size:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        start = self._line_start(f, size)
                        self._warn_torn(start, size - start)
                        f.truncate(start)  # the file stays a journal Optuna's own reader takes
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        finally:
            self._append_lock.release()

    @staticmethod
    def _line_start(f, size: int) -> int:
        """The byte offset where the file's last line begins."""
        back = min(size, 1 << 20)
        f.seek(size - back)
        tail = f.read(back)
        return size - back + tail.rfind(b"\n") + 1
