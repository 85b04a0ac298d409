"""Training dialog: runs the trainer as a separate process, with live progress, log and cancel.

The process is `python -m ssjdn.desktop.train_process`, the trainer behind `ssjdn train` plus
per-step progress lines and a graceful SIGTERM (see that module).

A separate process (QProcess), not a thread: training holds the GIL and the GPU for hours, may
crash on out-of-memory, and must survive nothing of the GUI's state. The process's output is the
only interface, so the dialog follows it line by line, and the checkpoint it writes is handed
to the main window to be registered as a model choice.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import re

from PySide6.QtCore import QPointF, QProcess, QProcessEnvironment, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QProgressBar,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ssjdn.desktop.settings import training_runs_dir
from ssjdn.desktop.train_process import PROGRESS_PREFIX

KILL_AFTER_MS = 10_000   # a trainer that ignores the stop request this long is killed
# The recipe of the shipped model: trains on a 2-core CPU in about an hour (a GPU is faster).
DEFAULT_CONFIG = "ucm_default_cpu"
ESTIMATE_AFTER_STEPS = 3   # steps timed (after the first, which loads and warms up) before estimating
LOSS_COLOR, VAL_COLOR = QColor(230, 120, 30), QColor(40, 140, 230)


def training_configs() -> list[Path]:
    from ssjdn.core.places import shipped_path
    return sorted(shipped_path("training", "configs").glob("*.yaml"))


def config_description(path: Path) -> str:
    """A config's one-line description: the first sentence of its leading comment."""
    lines = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    comment = " ".join(lines)
    # A sentence ends at a full stop before a capital letter ("et al. 2016" does not end one).
    return re.split(r"(?<=\.)\s+(?=[A-Z])", comment, maxsplit=1)[0] if comment else ""


def training_environment(device: str) -> dict[str, str]:
    """Environment variables choosing the trainer's device (it takes CUDA when it sees one)."""
    if device == "cpu":
        return {"CUDA_VISIBLE_DEVICES": ""}
    if device.startswith("cuda:"):
        return {"CUDA_VISIBLE_DEVICES": device.split(":", 1)[1]}
    return {}


class EpochTimer:
    """Time per epoch from the step events, once a few steps after the first have been timed
    (the first step of a run loads data and warms up)."""

    def __init__(self) -> None:
        self._first: tuple[float, int] | None = None   # (time, global step) of the first timed step
        self._last: tuple[float, int] | None = None

    def step(self, now: float, event: dict) -> None:
        done = (int(event["epoch"]) - 1) * int(event["steps"]) + int(event["step"])
        if self._first is None:
            self._first = (now, done)
        self._last = (now, done)

    def seconds_per_step(self) -> float | None:
        if self._first is None or self._last[1] - self._first[1] < ESTIMATE_AFTER_STEPS:
            return None
        return (self._last[0] - self._first[0]) / (self._last[1] - self._first[1])

    def describe(self, event: dict) -> str:
        """'about 4 min per epoch, 52 min left', or '' before there is an estimate."""
        per_step = self.seconds_per_step()
        if per_step is None:
            return ""
        steps, epochs = int(event["steps"]), int(event["epochs"])
        left = (epochs - int(event["epoch"])) * steps + steps - int(event["step"])
        return (f"about {_duration(per_step * steps)} per epoch, {_duration(per_step * left)} left "
                "(validation not counted)")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def parse_progress_line(line: str) -> dict | None:
    """The event of one "@progress {json}" line of the training process, or None."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    try:
        event = json.loads(line[len(PROGRESS_PREFIX):])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def overall_fraction(event: dict) -> float | None:
    """Fraction of the whole run done at a step or epoch event."""
    epochs = max(1, int(event.get("epochs", 1)))
    if event.get("event") == "step":
        steps = max(1, int(event.get("steps", 1)))
        return ((int(event["epoch"]) - 1) + int(event["step"]) / steps) / epochs
    if event.get("event") == "epoch":
        return int(event["epoch"]) / epochs
    return None


def checkpoint_of(done_event: dict | None, out_dir: Path | None) -> Path | None:
    """The checkpoint a run produced: its best one when validation chose one, else its last."""
    from ssjdn.training.checkpoints import BEST_CHECKPOINT, LAST_CHECKPOINT
    candidates = []
    if done_event:
        candidates += [done_event.get("best_checkpoint"), done_event.get("last_checkpoint")]
    if out_dir is not None:
        candidates += [out_dir / BEST_CHECKPOINT, out_dir / LAST_CHECKPOINT]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


class QtTrainingDialog(QDialog):
    checkpointReady = Signal(str)     # path of the trained checkpoint
    started = Signal()
    progressed = Signal(dict)         # each progress event of the trainer
    stopped = Signal(int, bool)       # exit code, cancelled

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Train a model")
        self.resize(760, 720)
        self.timer = EpochTimer()
        self.process: QProcess | None = None
        self.cancelled = False
        self.out_dir: Path | None = None
        self._done_event: dict | None = None
        self._resume = False
        self._buffer = ""
        self._build()

    def _build(self) -> None:
        self.dataset = QLineEdit(placeholderText="Folder of a captioned dataset (e.g. UCM-Captions)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_dataset)
        dataset_row = QHBoxLayout()
        dataset_row.addWidget(self.dataset, 1)
        dataset_row.addWidget(browse)
        self.config = QComboBox()
        self.config.setEditable(True)
        for path in training_configs():
            self.config.addItem(path.stem, str(path))
            self.config.setItemData(self.config.count() - 1, config_description(path), Qt.ItemDataRole.ToolTipRole)
        self.config_description = QLabel()
        self.config_description.setWordWrap(True)
        self.config.currentIndexChanged.connect(self._describe_config)
        default = self.config.findText(DEFAULT_CONFIG)
        self.config.setCurrentIndex(max(default, 0))
        self._describe_config()
        from ssjdn.desktop.models import device_choices
        self.device = QComboBox()
        self.device.addItems(device_choices())
        self.device.setToolTip("auto: a CUDA GPU when there is one, else the CPU")
        self.epochs = QSpinBox(minimum=0, maximum=1000, value=0, specialValueText="from config")
        self.output = QLineEdit(str(training_runs_dir()))
        form = QFormLayout()
        form.addRow("Dataset folder", dataset_row)
        form.addRow("Config", self.config)
        form.addRow("", self.config_description)
        form.addRow("Device", self.device)
        form.addRow("Epochs", self.epochs)
        form.addRow("Runs folder", self.output)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.state = QLabel("Idle.")
        self.estimate = QLabel("")
        self.chart = QtTrainingChart()
        self.log = QPlainTextEdit(readOnly=True)
        self.log.setMaximumBlockCount(5000)
        self.start_button = QPushButton("Start training")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the stopped run from its last finished epoch")
        self.resume_button.setEnabled(False)
        self.cancel_button = QPushButton("Cancel training")
        self.cancel_button.setEnabled(False)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.hide)
        buttons.addButton(self.start_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.resume_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.cancel_button, QDialogButtonBox.ButtonRole.ActionRole)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.state)
        layout.addWidget(self.estimate)
        layout.addWidget(self.chart, 1)
        layout.addWidget(self.log, 1)
        layout.addWidget(buttons)
        self.start_button.clicked.connect(lambda: self.start_training())
        self.resume_button.clicked.connect(self.resume_training)
        self.cancel_button.clicked.connect(self.cancel_training)

    def _describe_config(self, _index: int = 0) -> None:
        data = self.config.currentData()
        self.config_description.setText(config_description(Path(data)) if data else "")

    def _browse_dataset(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Dataset folder")
        if path:
            self.dataset.setText(path)

    def command(self) -> list[str]:
        """The trainer's argument list (after the Python executable)."""
        config = self.config.currentData() or self.config.currentText()
        args = ["-m", "ssjdn.desktop.train_process", "--config", str(config),
                "--data-root", self.dataset.text().strip(), "--out", str(self.out_dir)]
        if self.epochs.value() > 0:
            args += ["--epochs", str(self.epochs.value())]
        if self._resume:
            args.append("--resume")
        return args

    def is_running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning

    def can_resume(self) -> bool:
        """A stopped run that saved at least one epoch can continue where it stopped."""
        from ssjdn.training.checkpoints import LAST_CHECKPOINT
        return (not self.is_running() and self.out_dir is not None
                and (self.out_dir / LAST_CHECKPOINT).is_file()
                and (self._done_event is None or self._done_event.get("status") == "cancelled"))

    def resume_training(self) -> None:
        if self.can_resume():
            self.start_training(resume=True)

    def start_training(self, resume: bool = False) -> None:
        if self.is_running():
            return
        if not self.dataset.text().strip():
            self.state.setText("Choose the dataset folder first.")
            return
        if not resume:
            self.out_dir = Path(self.output.text()).expanduser() / time.strftime("run-%Y%m%d-%H%M%S")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._resume = resume
        self.cancelled = False
        self._done_event = None
        self._buffer = ""
        self.log.clear()
        self.timer = EpochTimer()
        self.estimate.setText("")
        if not resume:
            self.chart.clear()
        process = QProcess(self)
        from ssjdn.core.offline import use_offline_hub
        variables = dict(os.environ, PYTHONUNBUFFERED="1")   # lines must arrive as they are printed
        variables.update(training_environment(self.device.currentText()))
        use_offline_hub(variables)
        env = QProcessEnvironment()
        for name, value in variables.items():
            env.insert(name, value)
        process.setProcessEnvironment(env)
        process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        process.readyReadStandardOutput.connect(self._read_output)
        process.finished.connect(self._on_finished)
        process.errorOccurred.connect(self._on_error)
        self.process = process
        args = self.command()
        self._append(f"$ {sys.executable} {' '.join(args)}\n")
        self.progress.setRange(0, 0)
        self.state.setText("Starting the trainer…")
        self.start_button.setEnabled(False)
        self.resume_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        process.start(sys.executable, args)
        self.started.emit()

    def cancel_training(self) -> None:
        """Ask the trainer to stop (it saves what it has), then kill it if it does not."""
        if not self.is_running():
            return
        self.cancelled = True
        self.state.setText("Cancelling…")
        if os.name == "nt":
            self.process.kill()
        else:
            self.process.terminate()
            from PySide6.QtCore import QTimer
            # Bound to this run's process: a resumed run started meanwhile must not be hit, and a
            # process already gone makes the timer a no-op.
            QTimer.singleShot(KILL_AFTER_MS, self.process, self.process.kill)

    def stop_training(self) -> None:
        if self.is_running():
            self.cancel_training()
            self.process.waitForFinished(15000)

    def _read_output(self) -> None:
        text = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        # tqdm redraws with \r; treat it as a line end. Progress lines stay out of the log.
        self._buffer += text.replace("\r", "\n")
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            if not line.startswith(PROGRESS_PREFIX):
                self._append(line + "\n")
            self._follow(line)

    def _follow(self, line: str) -> None:
        event = parse_progress_line(line)
        if event is None:
            return
        if event.get("event") == "done":
            self._done_event = event
        fraction = overall_fraction(event)
        if fraction is not None:
            self.progress.setRange(0, 1000)
            self.progress.setValue(round(1000 * min(fraction, 1.0)))
            text = f"Epoch {event['epoch']} of {event['epochs']}"
            if event.get("event") == "step":
                text += f", step {event['step']} of {event['steps']}, loss {event.get('loss', float('nan')):.3f}"
                self.timer.step(time.monotonic(), event)
                self.estimate.setText(self.timer.describe(event))
                if event.get("loss") is not None:
                    self.chart.add_loss(fraction * int(event["epochs"]), float(event["loss"]))
            elif event.get("val_mR") is not None:
                self.chart.add_val(int(event["epoch"]), float(event["val_mR"]))
            self.state.setText(text)
        self.progressed.emit(event)

    def _append(self, text: str) -> None:
        self.log.moveCursor(self.log.textCursor().MoveOperation.End)
        self.log.insertPlainText(text)
        self.log.ensureCursorVisible()

    def _on_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.state.setText(f"The trainer could not start: {self.process.errorString()}")

    def _on_finished(self, exit_code: int, _status) -> None:
        if self._buffer:
            self._append(self._buffer)
            self._follow(self._buffer)
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        checkpoint = checkpoint_of(self._done_event, self.out_dir)
        if self.cancelled:
            self.progress.setValue(0)
            self.state.setText("Training cancelled." + (f" Last checkpoint: {checkpoint}" if checkpoint else ""))
        elif exit_code == 0 and checkpoint is not None:
            self.progress.setValue(1)
            self.state.setText(f"Done. The model {checkpoint} is now in the Model list.")
            self.checkpointReady.emit(str(checkpoint))
        else:
            self.progress.setValue(0)
            self.state.setText(f"Training failed (exit code {exit_code}); the log below says why.")
        self.resume_button.setEnabled(self.can_resume())
        self.stopped.emit(exit_code, self.cancelled)


class QtTrainingChart(QWidget):
    """The run so far: training loss per step (orange, left scale) and val mR per epoch (blue,
    right scale), against epochs."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(150)
        self.loss: list[tuple[float, float]] = []   # (epochs done, loss)
        self.val: list[tuple[float, float]] = []    # (epoch, val mR)

    def clear(self) -> None:
        self.loss, self.val = [], []
        self.update()

    def add_loss(self, epochs_done: float, loss: float) -> None:
        self.loss.append((epochs_done, loss))
        self.update()

    def add_val(self, epoch: int, mean_recall: float) -> None:
        self.val.append((float(epoch), mean_recall))
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), self.palette().base())
        plot = QRectF(50, 10, self.width() - 100, self.height() - 34)
        painter.setPen(QPen(self.palette().mid().color()))
        painter.drawRect(plot)
        painter.setFont(QFont("Sans", 8))
        if not self.loss and not self.val:
            painter.drawText(plot, Qt.AlignmentFlag.AlignCenter, "loss and val mR appear here as the run goes")
            return
        x_max = max([x for x, _ in self.loss + self.val] + [1.0])
        painter.setPen(self.palette().text().color())
        painter.drawText(QRectF(plot.left(), plot.bottom() + 4, plot.width(), 16),
                         Qt.AlignmentFlag.AlignCenter, f"epochs (0 to {x_max:g})")
        self._series(painter, plot, self.loss, x_max, LOSS_COLOR, "loss", left=True)
        self._series(painter, plot, self.val, x_max, VAL_COLOR, "val mR", left=False)

    def _series(self, painter, plot: QRectF, points, x_max, color, name, left: bool) -> None:
        if not points:
            return
        values = [v for _, v in points]
        low, high = min(values), max(values)
        span = (high - low) or 1.0
        at = lambda x, v: QPointF(plot.left() + plot.width() * x / x_max,  # noqa: E731
                                  plot.bottom() - plot.height() * (v - low) / span)
        path = QPainterPath(at(*points[0]))
        for x, v in points[1:]:
            path.lineTo(at(x, v))
        painter.setPen(QPen(color, 2))
        painter.drawPath(path)
        for x, v in points if len(points) < 30 else points[-1:]:
            painter.drawEllipse(at(x, v), 2.5, 2.5)
        side = QRectF(0 if left else plot.right() + 2, plot.top(), 48, plot.height())
        align = Qt.AlignmentFlag.AlignRight if left else Qt.AlignmentFlag.AlignLeft
        painter.drawText(side.adjusted(0, 0, -2, 0), align | Qt.AlignmentFlag.AlignTop, f"{high:.3g}")
        painter.drawText(side.adjusted(0, 0, -2, 0), align | Qt.AlignmentFlag.AlignBottom, f"{low:.3g}")
        painter.drawText(side.adjusted(0, 0, -2, 0), align | Qt.AlignmentFlag.AlignVCenter,
                         f"{name}\n{values[-1]:.3g}")
