"""Long work off the GUI thread: a QThread that runs one function with progress and cancel, and
the queue that runs `Job`s in such threads one at a time (the app's one worker lifecycle).

The function gets `progress(update)` (a core.progress.Progress) and a `threading.Event` to
honour; the engine's build_index takes exactly these. Results and errors come back as signals, so the GUI
shows a message box rather than a traceback, and tests wait on `finished_ok` / `failed`.
"""
from __future__ import annotations

import threading
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Callable

from PySide6.QtCore import QObject, QThread, Signal


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(one line for the user, details). A UserError's text is shown as is; anything else is
    named in one line pointing at the error log that keeps its traceback (as the CLI does)."""
    from ssjdn.core.errors import message_for
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    message, _ = message_for(exc, "SSJDN Explorer")
    return message, details


class QtFunctionWorker(QThread):
    """Runs `function(progress=..., cancel=...)` (or `function()` with `plain=True`) in a thread."""

    progressed = Signal(object)            # a core.progress.Progress
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

    def _progress(self, update) -> None:
        self.progressed.emit(update)

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


@dataclass
class Job:
    """One piece of long work and what becomes of its outcome, on the GUI thread."""

    label: str                                # "Searching": named in the status line and in a failure
    work: Callable                            # work(), or work(progress=, cancel=) with reports_progress
    on_result: Callable | None = None
    on_cancelled: Callable | None = None      # the result of a cancelled run; None: it is dropped
    on_error: Callable | None = None          # called after the failure is reported
    reports_progress: bool = False

    @property
    def failure_title(self) -> str:
        return f"{self.label} failed"


class QtJobQueue(QObject):
    """Runs Jobs one at a time, in order, each in a QtFunctionWorker (the engine's model and
    index are shared, so its jobs must not overlap). A request may also be a function that makes
    its Job (or None) when its turn comes: `submit_once` keeps one such request waiting however
    often it is made, so a build asked for while one runs starts once, from the state of then."""

    started = Signal(object)               # the Job now running
    progressed = Signal(object)            # the running job's core.progress.Progress
    failed = Signal(str, str, str)         # title, message for the user, details
    cancelling = Signal()                  # the running job was asked to stop
    ended = Signal(object)                 # a Job ended: done, cancelled or failed
    idle = Signal()                        # a job ended and none waits

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._waiting: deque = deque()
        self.worker: QtFunctionWorker | None = None
        self.job: Job | None = None

    def submit(self, job: Job) -> None:
        self._waiting.append(job)
        self._start_next()

    def submit_once(self, make_job: Callable[[], Job | None]) -> None:
        if make_job not in self._waiting:
            self._waiting.append(make_job)
        self._start_next()

    def cancel(self) -> bool:
        """Ask the running job to stop; False when none runs."""
        if self.worker is None:
            return False
        self.worker.cancel()
        self.cancelling.emit()
        return True

    def is_busy(self) -> bool:
        return self.worker is not None or bool(self._waiting)

    def stop(self, wait_ms: int = 30000) -> None:
        """Drop what waits, cancel what runs and wait for it (a worker must not outlive its window)."""
        self._waiting.clear()
        if self.worker is not None:
            self.worker.cancel()
            self.worker.wait(wait_ms)

    def _start_next(self) -> None:
        while self.worker is None and self._waiting:
            job = self._waiting.popleft()
            if not isinstance(job, Job):
                job = job()
            if job is not None:
                self._start(job)

    def _start(self, job: Job) -> None:
        worker = QtFunctionWorker(job.work, plain=not job.reports_progress, parent=self)
        if job.on_result is not None:
            worker.finished_ok.connect(job.on_result)
        if job.on_cancelled is not None:
            worker.cancelled.connect(job.on_cancelled)
        worker.progressed.connect(self.progressed)
        worker.failed.connect(lambda message, details: self._failed(job, message, details))
        worker.finished.connect(self._on_finished)
        self.worker, self.job = worker, job
        self.started.emit(job)
        worker.start()

    def _failed(self, job: Job, message: str, details: str) -> None:
        self.failed.emit(job.failure_title, message, details)
        if job.on_error is not None:
            job.on_error()

    def _on_finished(self) -> None:
        job, self.worker, self.job = self.job, None, None
        self.ended.emit(job)
        self._start_next()
        if self.worker is None:
            self.idle.emit()
