"""File utilities every writer shares: atomic writes and sha256 digests.

atomic_path: write under a temporary name beside the file, move it into place on success, so a
crash or a full disk never leaves a half-written file under the real name.
"""
from __future__ import annotations

import errno
import hashlib
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

from ssjdn.core.errors import os_error_as_user_error


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` to write to; it replaces `path` only on success.

    A full disk or a folder we may not write to becomes a UserError naming `path`."""
    path = Path(path).expanduser()
    # Keep the real extension: GDAL and fiona pick their driver from it.
    tmp = path.with_name(f".{path.stem}.partial-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):   # say so before GDAL fails with its own words
            raise PermissionError(errno.EACCES, "Permission denied", str(path.parent))
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        user_error = os_error_as_user_error(exc, path, doing="write")
        if user_error is None:
            raise
        raise user_error from exc
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # e.g. a read-only folder where nothing was written


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (weights, checkpoints, search files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
