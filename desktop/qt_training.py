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

from PySide6.QtCore import QProcess, QProcessEnvironment, Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QProgressBar,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ssjdn.desktop.settings import training_runs_dir
from ssjdn.desktop.train_process import PROGRESS_PREFIX

KILL_AFTER_MS = 10_000   # a trainer that ignores the stop request this long is killed



def training_configs() -> list[Path]:
    folder = Path(__file__).resolve().parent.parent / "training" / "configs"
    return sorted(folder.glob("*.yaml"))


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
    candidates = []
    if done_event:
        candidates += [done_event.get("best_checkpoint"), done_event.get("last_checkpoint")]
    if out_dir is not None:
        candidates += [out_dir / "best.safetensors", out_dir / "last.safetensors"]
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
        self.resize(720, 520)
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
        self.epochs = QSpinBox(minimum=0, maximum=1000, value=0, specialValueText="from config")
        self.output = QLineEdit(str(training_runs_dir()))
        form = QFormLayout()
        form.addRow("Dataset folder", dataset_row)
        form.addRow("Config", self.config)
        form.addRow("Epochs", self.epochs)
        form.addRow("Runs folder", self.output)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.state = QLabel("Idle.")
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
        layout.addWidget(self.log, 1)
        layout.addWidget(buttons)
        self.start_button.clicked.connect(lambda: self.start_training())
        self.resume_button.clicked.connect(self.resume_training)
        self.cancel_button.clicked.connect(self.cancel_training)

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
        return (not self.is_running() and self.out_dir is not None
                and (self.out_dir / "last.safetensors").is_file()
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
        process = QProcess(self)
        from ssjdn.core.offline import use_offline_hub
        variables = dict(os.environ, PYTHONUNBUFFERED="1")   # lines must arrive as they are printed
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
            self.state.setText(f"Training failed (exit code {exit_code}); see the log above.")
        self.resume_button.setEnabled(self.can_resume())
        self.stopped.emit(exit_code, self.cancelled)
