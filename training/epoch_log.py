"""log.csv and TensorBoard: one row / point per epoch, rank 0 only."""
from __future__ import annotations

import csv
from pathlib import Path

from ssjdn.core.files import atomic_path

LOG_FILE = "log.csv"


class EpochLog:
    """log.csv (appended across resumes) and TensorBoard scalars, rank 0 only."""

    def __init__(self, out_dir: Path, tensorboard: bool):
        self.csv_path = out_dir / LOG_FILE
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(out_dir / "tb"))
            except ImportError:
                self.writer = None

    def write(self, row: dict) -> None:
        header = self._header()
        with open(self.csv_path, "a", newline="") as handle:
            # A resumed run keeps the columns it started with (an older version may have
            # logged other metrics): values stay under their own names.
            writer = csv.DictWriter(handle, fieldnames=header or list(row), restval="",
                                    extrasaction="ignore")
            if not header:
                writer.writeheader()
            writer.writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key.replace("@", "_at_"), value, row["epoch"])
            self.writer.flush()

    def drop_after(self, epoch: int) -> None:
        """Forget rows of epochs after `epoch` (written, then cut off before the trainer state
        committed them: they are trained again)."""
        if not self.csv_path.exists():
            return
        with open(self.csv_path, newline="") as handle:
            rows = list(csv.reader(handle))
        column = rows[0].index("epoch") if rows and "epoch" in rows[0] else 0
        kept = rows[:1] + [row for row in rows[1:] if row and int(float(row[column])) <= epoch]
        if len(kept) == len(rows):
            return

        with atomic_path(self.csv_path) as tmp, open(tmp, "w", newline="") as handle:
            csv.writer(handle).writerows(kept)

    def _header(self) -> list[str] | None:
        if not self.csv_path.exists():
            return None
        with open(self.csv_path, newline="") as handle:
            return next(csv.reader(handle), None)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
