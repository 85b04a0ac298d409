"""A Dask worker plugin that crashes a worker once, for the cluster tests."""
from __future__ import annotations

import os

from distributed.diagnostics.plugin import WorkerPlugin


class KillWorkerOnce(WorkerPlugin):
    """Kills its worker's process, as a crash or the OOM killer would, when the worker starts a
    task whose key starts with `prefix` and ends with `suffix`; only once across all workers
    (the first to create `marker` does it)."""

    name = "ssjdn-test-kill-worker-once"

    def __init__(self, prefix: str, suffix: str, marker: str):
        self.prefix, self.suffix, self.marker = prefix, suffix, marker

    def transition(self, key, start, finish, **kwargs):
        key = str(key)
        if finish != "executing" or not (key.startswith(self.prefix) and key.endswith(self.suffix)):
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os._exit(1)
