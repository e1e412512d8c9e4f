"""An advisory lock per Qdrant Edge shard, taken before ``EdgeShard.load`` is ever called.

Qdrant Edge locks its write-ahead log itself, but a second process that merely *tries*
``EdgeShard.load`` on a shard another process holds gets ``WouldBlock`` and leaves the holder
unable to flush ("tracker_journal.dat is shorter than expected"; upstream: qdrant/qdrant#10336).
So no process calls ``load`` unless it holds this lock: an ``fcntl.flock`` on ``<shard>.lock``
beside the shard directory, which the kernel releases when the process dies (no stale locks).
The holder's pid is written into the file, for the error message of whoever is refused.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ..exceptions import IndexUnavailable


class ShardLock:
    def __init__(self, shard_dir: Path) -> None:
        self.shard_dir = shard_dir
        self.path = shard_dir.with_name(shard_dir.name + ".lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float) -> None:
        """Take the lock, waiting up to ``timeout`` seconds; else :class:`IndexUnavailable`."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(timeout, 0.0)
        delay = 0.02
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder(fd)
                    os.close(fd)
                    raise IndexUnavailable(
                        f"the Qdrant Edge shard {self.shard_dir} is open in another process"
                        f"{f' (pid {holder})' if holder else ''}; the embedded index serves one process. "
                        "Run this in that process, stop it, or use a Qdrant server (QDRANT_URL)."
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def try_acquire(self) -> bool:
        try:
            self.acquire(0)
        except IndexUnavailable:
            return False
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def unlink(self) -> None:
        """Remove the lock file (only while holding the lock, before dropping the shard)."""
        self.path.unlink(missing_ok=True)

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            return os.pread(fd, 32, 0).decode(errors="replace").strip()
        except OSError:
            return ""
