"""The training dialog runs the trainer as a separate process: progress, cancel, registration."""
from __future__ import annotations

from pathlib import Path

import pytest
from caption_fixtures import write_ucm_json
from desktop_fixtures import INDEX_TIMEOUT_MS, make_window, user_dirs  # noqa: F401
from PySide6.QtCore import Qt

from ssjdn.desktop.qt_training import (DEFAULT_CONFIG, EpochTimer, config_description, overall_fraction,
                                       parse_progress_line, training_configs)

TINY_CONFIG = Path(__file__).resolve().parent.parent / "training" / "configs" / "tiny.yaml"
PROCESS_MS = 180_000   # a fresh Python that imports torch, on 2 busy cores


@pytest.fixture
def ucm_root(tmp_path):
    write_ucm_json(tmp_path / "ucm")
    return tmp_path / "ucm"


def open_dialog(window, ucm_root, tmp_path, epochs):
    window.dialogs.open_training_dialog()
    dialog = window.dialogs.training_dialog
    dialog.dataset.setText(str(ucm_root))
    dialog.config.setCurrentIndex(dialog.config.findText("tiny"))
    assert dialog.config.currentData() == str(TINY_CONFIG)
    dialog.epochs.setValue(epochs)
    dialog.device.setCurrentText("cpu")
    dialog.output.setText(str(tmp_path / "runs"))
    return dialog


def test_the_dialog_opens_on_the_shipped_models_recipe_and_describes_every_config(make_window):
    window = make_window(auto_index=False)
    window.dialogs.open_training_dialog()
    dialog = window.dialogs.training_dialog
    assert dialog.config.currentText() == DEFAULT_CONFIG == "ucm_default_cpu"
    assert dialog.config_description.text().startswith("The recipe of the shipped default model")
    for path in training_configs():
        description = config_description(path)
        assert description and "\n" not in description and description.endswith((".", ")")), path
    assert config_description(TINY_CONFIG).startswith("Smoke-test config")
    assert config_description(TINY_CONFIG.with_name("ucm.yaml")).startswith("UCM-Captions (Qu et al. 2016)")
    assert dialog.device.currentText() == "auto" and "cpu" in [dialog.device.itemText(i)
                                                               for i in range(dialog.device.count())]
    dialog.config.setCurrentIndex(dialog.config.findText("tiny"))
    assert dialog.config_description.text() == config_description(TINY_CONFIG)


def test_time_per_epoch_is_estimated_after_the_first_steps():
    timer = EpochTimer()
    event = {"epoch": 1, "epochs": 10, "steps": 20}
    for step, now in ((1, 100.0), (2, 102.0), (3, 104.0)):      # the first step's time is not counted
        timer.step(now, {**event, "step": step})
        assert timer.describe({**event, "step": step}) == ""
    timer.step(106.0, {**event, "step": 4})
    assert timer.seconds_per_step() == pytest.approx(2.0)
    assert timer.describe({**event, "step": 4}) == ("about 40 s per epoch, 7 min left "
                                                    "(validation not counted)")


def test_the_training_dialog_starts_and_cancels_a_tiny_run(qtbot, make_window, ucm_root, tmp_path):
    window = make_window(auto_index=False)
    dialog = open_dialog(window, ucm_root, tmp_path, epochs=500)   # far more than the test waits for
    with qtbot.waitSignal(dialog.progressed, timeout=PROCESS_MS,
                          check_params_cb=lambda event: event.get("event") == "step"):
        qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    assert dialog.is_running()
    assert not dialog.start_button.isEnabled() and dialog.cancel_button.isEnabled()
    assert dialog.state.text().startswith("Epoch 1 of 500, step")
    assert 0 <= dialog.progress.value() < dialog.progress.maximum()
    assert dialog.process.processEnvironment().value("CUDA_VISIBLE_DEVICES") == ""   # device: cpu
    qtbot.waitUntil(lambda: "per epoch" in dialog.estimate.text(), timeout=PROCESS_MS)
    assert len(dialog.chart.loss) >= 4                         # the live chart follows the loss

    with qtbot.waitSignal(dialog.stopped, timeout=PROCESS_MS) as stopped:
        qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    exit_code, cancelled = stopped.args
    assert cancelled and exit_code != 0
    assert not dialog.is_running()
    assert dialog.state.text().startswith("Training cancelled")
    assert dialog.start_button.isEnabled()
    assert window.prefs.checkpoints == []            # nothing registered from a cancelled run


def test_a_finished_run_registers_its_checkpoint_as_a_model_choice(qtbot, make_window, ucm_root, tmp_path):
    window = make_window(auto_index=False)
    dialog = open_dialog(window, ucm_root, tmp_path, epochs=1)
    with qtbot.waitSignal(dialog.checkpointReady, timeout=PROCESS_MS) as ready:
        dialog.start_training()
    checkpoint = Path(ready.args[0])
    assert checkpoint.suffix == ".safetensors" and checkpoint.is_file()
    assert "run-" in checkpoint.parent.name
    spec = f"file:{checkpoint.resolve()}"
    assert window.choice.model_combo.findData(spec) >= 0             # choosable for indexing
    assert window.prefs.checkpoints[0]["path"] == str(checkpoint.resolve())
    assert "@progress" not in dialog.log.toPlainText()        # progress lines drive the bar, not the log
    assert dialog.chart.loss and len(dialog.chart.val) == 1     # the epoch's val mR on the chart
    assert 0 <= dialog.chart.val[0][1] <= 100
    with qtbot.waitSignal(window.modelReady, timeout=INDEX_TIMEOUT_MS):
        window.choice.model_combo.setCurrentIndex(window.choice.model_combo.findData(spec))
    assert window.model.loaded.model.name == "tiny"


def test_progress_lines_give_the_fraction_of_the_whole_run():
    event = parse_progress_line('@progress {"event": "step", "epoch": 2, "epochs": 4, "step": 5, "steps": 10}')
    assert overall_fraction(event) == pytest.approx(0.375)
    assert parse_progress_line("epoch 1 val: mR 12.0") is None
    assert parse_progress_line("@progress {broken") is None


def test_a_cancelled_run_resumes_from_its_last_finished_epoch(qtbot, make_window, ucm_root, tmp_path):
    window = make_window(auto_index=False)
    dialog = open_dialog(window, ucm_root, tmp_path, epochs=200)
    finished_epochs = []
    dialog.progressed.connect(lambda e: finished_epochs.append(e["epoch"]) if e.get("event") == "epoch" else None)
    with qtbot.waitSignal(dialog.progressed, timeout=PROCESS_MS,
                          check_params_cb=lambda event: event.get("event") == "epoch"):
        dialog.start_training()
    with qtbot.waitSignal(dialog.stopped, timeout=PROCESS_MS):
        dialog.cancel_training()
    assert dialog.cancelled and dialog.resume_button.isEnabled()
    saved = max(finished_epochs)
    first_dir = dialog.out_dir
    dialog.epochs.setValue(saved + 1)                 # one more epoch is enough to see it resume
    with qtbot.waitSignal(dialog.stopped, timeout=PROCESS_MS) as stopped:
        qtbot.mouseClick(dialog.resume_button, Qt.MouseButton.LeftButton)
    log = dialog.log.toPlainText()
    assert stopped.args == [0, False], log
    assert window.prefs.checkpoints and dialog.out_dir == first_dir
    assert "--resume" in log and f"resuming after epoch {saved}" in log
    assert finished_epochs[-1] == saved + 1


def test_a_failed_run_points_to_the_log_below_it(qtbot, make_window, tmp_path):
    window = make_window(auto_index=False)
    dialog = open_dialog(window, tmp_path / "no-such-dataset", tmp_path, epochs=1)
    with qtbot.waitSignal(dialog.stopped, timeout=PROCESS_MS) as stopped:
        dialog.start_training()
    assert stopped.args[0] != 0 and not stopped.args[1]
    assert dialog.state.text().endswith("the log below says why.")
    layout = dialog.layout()
    assert layout.indexOf(dialog.log) > layout.indexOf(dialog.state)   # below, as it says
    assert "does not exist" in dialog.log.toPlainText()
