"""The toolbar's Model, Device and Tile boxes, bound to the session (napari style): a choice
only sets the session's attribute, and each box follows the session's events, whoever changed
it (the box, a session file, the training dialog, code). The model reacts to the same events
(ExplorerModel loads the model again, or indexes again at the new tile size)."""
from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QDoubleSpinBox

from ssjdn.desktop import models as model_choices
from ssjdn.desktop.settings import Preferences
from ssjdn.desktop.state import Session


class QtModelChoice:
    """The three boxes (the window places them in its toolbar)."""

    def __init__(self, session: Session, prefs: Preferences) -> None:
        self.session, self.prefs = session, prefs
        self.model_combo = QComboBox()
        self.model_combo.setMinimumContentsLength(34)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.device_combo = QComboBox()
        for device in model_choices.device_choices():
            self.device_combo.addItem(device, device)
        self.tile_size = QDoubleSpinBox(minimum=0.0, maximum=100000.0, decimals=1, singleStep=10.0, suffix=" m")
        self.tile_size.setSpecialValueText("auto (model's ground size)")
        self.tile_size.setToolTip("Ground size of a tile. 'auto' uses the size of the model's training "
                                  "images (UCM: 256 px x 0.3 m = 76.8 m).")
        self.tile_size.setValue(session.tile_ground_m or 0.0)
        self.refresh()
        self.model_combo.currentIndexChanged.connect(lambda _: session.set_model(self.model_combo.currentData()))
        self.device_combo.currentIndexChanged.connect(lambda _: session.set_device(self.device_combo.currentData()))
        self.tile_size.editingFinished.connect(lambda: session.set_tile_ground_m(self.tile_size.value()))
        session.events.connect("model", lambda spec: self._follow_model())
        session.events.connect("device", self._follow_device)
        session.events.connect("tile_size", self._follow_tile_size)

    def refresh(self) -> None:
        """List the models to choose from (the checkpoints in the preferences may have changed)."""
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for choice in model_choices.available_choices(self.prefs.checkpoints):
            self.model_combo.addItem(choice.label, choice.spec)
        if self.model_combo.findData(self.session.model_spec) < 0:
            self.model_combo.addItem(model_choices.label_for(self.session.model_spec), self.session.model_spec)
        self.model_combo.setCurrentIndex(self.model_combo.findData(self.session.model_spec))
        self.model_combo.blockSignals(False)
        self.device_combo.blockSignals(True)
        self.device_combo.setCurrentIndex(max(0, self.device_combo.findData(self.session.device)))
        self.device_combo.blockSignals(False)

    def _follow_model(self) -> None:
        if self.model_combo.currentData() != self.session.model_spec:
            self.refresh()

    def _follow_device(self, device: str) -> None:
        index = self.device_combo.findData(device)
        if index >= 0 and self.device_combo.currentIndex() != index:
            self.device_combo.blockSignals(True)
            self.device_combo.setCurrentIndex(index)
            self.device_combo.blockSignals(False)

    def _follow_tile_size(self, tile_ground_m) -> None:
        if (self.tile_size.value() or None) != tile_ground_m:
            self.tile_size.blockSignals(True)
            self.tile_size.setValue(tile_ground_m or 0.0)
            self.tile_size.blockSignals(False)
