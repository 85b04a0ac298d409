"""Long work off the GUI thread: a QThread that runs one function with progress and cancel.

The function gets `progress(done, total, message)` and a `threading.Event` to honour; the
engine's build_index takes exactly these. Results and errors come back as signals, so the GUI
shows a message box rather than a traceback, and tests wait on `finished_ok` / `failed`.
"""
from __future__ import annotations

import threading
import traceback
from typing import Callable

from PySide6.QtCore import QThread, Signal


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(one line for the user, details). A UserError's text is shown as is; anything else is
    named in one line pointing at the error log that keeps its traceback (as the CLI does)."""
    from ssjdn.core.errors import message_for
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    message, _ = message_for(exc, "SSJDN Explorer")
    return message, details


class QtFunctionWorker(QThread):
    """Runs `function(progress=..., cancel=...)` (or `function()` with `plain=True`) in a thread."""

    progressed = Signal(int, int, str)     # done, total, message
    finished_ok = Signal(object)           # the function's return value
    failed = Signal(str, str)              # message for the user, technical details
    cancelled = Signal(object)             # the return value of a run stopped by cancel()

    def __init__(self, function: Callable, plain: bool = False, parent=None) -> None:
        super().__init__(parent)
        self._function = function
        self._plain = plain
        self.cancel_event = threading.Event()

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def is_cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def _progress(self, done: int, total: int, message: str = "") -> None:
        self.progressed.emit(int(done), int(total), str(message))

    def run(self) -> None:  # noqa: D401 - QThread API
        try:
            if self._plain:
                result = self._function()
            else:
                result = self._function(progress=self._progress, cancel=self.cancel_event)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a message, never a crash
            message, details = describe_error(exc)
            self.failed.emit(message, details)
            return
        if self.cancel_event.is_set():
            self.cancelled.emit(result)
        else:
            self.finished_ok.emit(result)
