"""The index folder's writer lock (IndexLock): one `ssjdn index` (or app build) at a time."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ssjdn.core.errors import UserError

LOCK_NAME = "index.lock"
# A lock file without readable content is being written by its owner for at most this long;
# older, its owner died between creating and filling it.
_UNREADABLE_LOCK_GRACE_S = 10.0


class IndexLockedError(UserError):
    """Another process is adding to this index folder."""


class IndexLock:
    """One writer per index folder: a lock file naming its holder (pid, host, since).

    Two indexers on one folder would each encode every tile (correct, but twice the work), so
    the second is refused with the holder's name. A lock left by a dead process on this host is
    taken over. Readers (search, export) never need it: SQLite (WAL) keeps them consistent.
    """

    def __init__(self, index_dir):
        self.path = Path(index_dir) / LOCK_NAME
        self._token = None

    def acquire(self) -> "IndexLock":
        """Take the lock or raise IndexLockedError saying who holds it."""
        holder = self._try_take()
        if holder is not None:
            raise IndexLockedError(self._held_message(holder))
        return self

    def raise_if_held(self) -> None:
        """IndexLockedError if another live process holds the lock (which is not taken): a cheap
        check before work that comes ahead of acquire(), such as loading a model."""
        if self.path.exists():
            holder = _read_lock(self.path)
            if not _is_stale(self.path, holder):
                raise IndexLockedError(self._held_message(holder or {}))

    def try_acquire(self) -> bool:
        return self._try_take() is None

    def release(self) -> None:
        # Only remove our own lock: a lock taken over after ours went stale belongs to another.
        if self._token is not None and _read_lock(self.path) == self._token:
            self.path.unlink(missing_ok=True)
        self._token = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def _try_take(self):
        """None once the lock is ours, else the holder's record ({} if not yet readable)."""
        token = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(self.path)
                if not _is_stale(self.path, holder):
                    return holder or {}
                self.path.unlink(missing_ok=True)   # its owner is gone: take it over
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(token, f)
            self._token = token
            return None
        return _read_lock(self.path) or {}

    def _held_message(self, holder: dict) -> str:
        folder = self.path.parent
        if not holder:
            who = "another process that is just starting"
        else:
            since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(holder.get("since", 0))))
            who = f"pid {holder.get('pid')} on {holder.get('host')}, since {since}"
        return (f"Another `ssjdn index` (or the app) is adding to {folder}: {who}. Wait until it "
                f"finishes, or stop it, and run this command again; searching works meanwhile. "
                f"If that process is no longer running, delete {self.path}.")


def _read_lock(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "pid" in record else None


def _is_stale(path: Path, holder: dict | None) -> bool:
    if holder is None:
        try:
            return time.time() - path.stat().st_mtime > _UNREADABLE_LOCK_GRACE_S
        except OSError:
            return True   # gone meanwhile
    if holder.get("host") != socket.gethostname():
        return False      # another machine's process: we cannot tell whether it still runs
    try:
        pid, since = int(holder["pid"]), float(holder.get("since", 0))
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, TypeError, OverflowError):
        return False      # alive under another user (or an odd record): leave it
    # The pid lives, but if that process started after the lock was taken (after a reboot, say)
    # it is another process that reuses the number.
    started = _process_start_time(pid)
    return started is not None and started > since + 1.0


def _process_start_time(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), where /proc tells (Linux); else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")   # field 22: start in clock ticks
    except (OSError, ValueError, IndexError, StopIteration):
        return None
