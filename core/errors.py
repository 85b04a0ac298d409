"""Errors that carry a message meant for the user, and the log that keeps what users need not see.

A UserError's text says what went wrong and what to do; every entry point shows it as is. Any
other exception is a bug or an unforeseen cause: the entry point shows one line naming the
error and a log file holding the full traceback (`write_error_log`), never the traceback itself.
No Qt here: the CLI and the desktop app share these.
"""
from __future__ import annotations

import errno
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path


class UserError(Exception):
    """An error caused by input the user can fix; the CLI and the app show its text as is."""


class Cancelled(Exception):
    """Long work stopped because the user asked (a cancel event was set); nothing to report."""


def stop_check(cancel):
    """A no-argument callable telling whether to stop, from what long work accepts as
    `cancel`: None, a threading.Event (or anything with is_set), or such a callable."""
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    return cancel


class CheckpointError(UserError):
    """A file that is not a valid SSJDN checkpoint, or one that does not fit this install."""


# errno values a user fixes by choosing another place or making room, not by reporting a bug.
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}


def os_error_as_user_error(exc: BaseException, path=None, doing: str = "use") -> UserError | None:
    """A UserError for an OSError a user can fix (no space, no permission, read-only), else None.
    `doing` is the verb of the message: "Cannot write PATH: ..."."""
    if not isinstance(exc, OSError):
        return None
    code = exc.errno
    if code is None:   # GDAL (rasterio, fiona) raises OSErrors that carry only a message
        text = str(exc)
        code = errno.ENOSPC if "No space left" in text else \
            errno.EACCES if "Permission denied" in text or "Read-only file system" in text else None
    if code not in _NO_SPACE | _NO_PERMISSION:
        return None
    where = path or exc.filename or "a file"
    if code in _NO_SPACE:
        return UserError(f"Cannot {doing} {where}: the disk is full. Free some space (or choose "
                         f"another place) and run the command again.")
    return UserError(f"Cannot {doing} {where}: permission denied (or a read-only folder). "
                     f"Choose a place you can write to, or ask for access.")


def log_dir() -> Path:
    """Where error logs go: $SSJDN_LOG_DIR, else the platform's per-user log/cache folder."""
    if os.environ.get("SSJDN_LOG_DIR"):
        return Path(os.environ["SSJDN_LOG_DIR"]).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local") / "ssjdn" / "logs"
    if sys.platform == "darwin":
        return home / "Library" / "Logs" / "ssjdn"
    return Path(os.environ.get("XDG_STATE_HOME") or home / ".local" / "state") / "ssjdn" / "logs"


def write_error_log(exc: BaseException, context: str = "", folder=None, name: str | None = None) -> Path:
    """Write `exc`'s full traceback (and `context`, e.g. the command line) to a new log file and
    return its path: in `folder` if given (e.g. a training run's own folder), else log_dir(),
    else the temp folder, whichever can be written first."""
    name = name or f"ssjdn-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = (f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}\n{context}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    candidates = [Path(folder)] if folder is not None else []
    for place in candidates + [log_dir(), Path(tempfile.gettempdir()) / "ssjdn-logs"]:
        try:
            place.mkdir(parents=True, exist_ok=True)
            path = place / name
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    raise OSError(f"cannot write an error log in {log_dir()} or the temp folder")


def message_for(exc: BaseException, context: str = "", log_folder=None,
                log_name: str | None = None) -> tuple[str, Path | str | None]:
    """The one line a user sees for `exc`, and the error log written for it (None for an error
    the user can fix, whose text says what to do; no log is needed then). `log_folder` and
    `log_name` choose where the log goes first (see write_error_log)."""
    user_error = exc if isinstance(exc, UserError) else os_error_as_user_error(exc)
    if user_error is not None:
        return str(user_error), None
    try:
        log = write_error_log(exc, context, log_folder, log_name)
    except OSError as log_failure:
        log = f"nowhere: {log_failure}"
    return describe_unexpected(exc, log), log


def describe_unexpected(exc: BaseException, log_path) -> str:
    """The one line shown for an exception that is not a UserError."""
    if isinstance(exc, MemoryError):
        what = "Out of memory. Close other programs, or use smaller tiles or batches."
    else:
        what = f"Unexpected error: {type(exc).__name__}: {exc}".rstrip(": ")
    return f"{what} (the full report is in {log_path})"
