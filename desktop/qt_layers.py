"""Layer panel: one row per map layer with a visibility check box; opacity for the selected row.

Bound to the app model's LayerList (napari style): the rows follow its events, and the check
boxes and the slider only set its layers' state; the map follows the same list."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMenu, QSlider,
                               QVBoxLayout, QWidget)

from ssjdn.desktop.layers import LayerList
from ssjdn.desktop.qt_map import QtMapView

KIND_ORDER = {"measure": -1, "selection": 0, "marks": 1, "hits": 2, "tiles": 3, "salience": 4,
              "probability": 5, "heatmap": 6, "raster": 7, "background": 8}
KIND_LABEL = {"raster": "raster", "tiles": "grid", "hits": "hits", "heatmap": "heatmap",
              "salience": "SEM/SSM", "selection": "selection", "marks": "marks",
              "probability": "find all", "measure": "measure", "background": "tiles"}


class QtLayerPanel(QWidget):
    closeRasterRequested = Signal(str)   # raster path

    def __init__(self, layers: LayerList, map_view: QtMapView, parent=None) -> None:
        super().__init__(parent)
        self.layers = layers
        self.map_view = map_view   # for zooming to a layer
        self.list = QListWidget()
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setEnabled(False)
        self.opacity_label = QLabel()
        row = QHBoxLayout()
        row.addWidget(self.opacity_label)
        row.addWidget(self.opacity)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.list)
        layout.addLayout(row)
        self._updating = False
        layers.events.connect("layers", self.refresh)
        layers.events.connect("layer", lambda layer: self._follow_layer(layer))
        self.list.itemChanged.connect(self._on_item_changed)
        self.list.currentItemChanged.connect(self._on_current_changed)
        self.opacity.valueChanged.connect(self._on_opacity)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._menu)
        self.list.itemDoubleClicked.connect(lambda item: self.zoom_to(item.data(Qt.ItemDataRole.UserRole)))
        self.list.setToolTip("Double-click a layer (or right-click > Zoom to layer) to fit the map to it")
        self.refresh()

    def zoom_to(self, name: str) -> None:
        self.map_view.zoom_to_layer(name)

    def _menu(self, pos) -> None:
        item = self.list.itemAt(pos)
        if item is None:
            return
        name = item.data(Qt.ItemDataRole.UserRole)
        menu = QMenu(self)
        menu.addAction("Zoom to layer", lambda: self.zoom_to(name))
        if self.layers[name].kind == "raster":
            path = name.split(":", 1)[1]
            menu.addAction("Close raster", lambda: self.closeRasterRequested.emit(path))
        menu.exec(self.list.viewport().mapToGlobal(pos))

    def refresh(self) -> None:
        """Rebuild the rows from the layer list."""
        self._updating = True
        current = self.current_layer()
        self.list.clear()
        names = sorted(self.layers, key=lambda n: (KIND_ORDER[self.layers[n].kind], n))
        for name in names:
            state = self.layers[name]
            item = QListWidgetItem(f"{state.name}  [{KIND_LABEL[state.kind]}]")
            item.setData(Qt.ItemDataRole.UserRole, name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if state.visible else Qt.CheckState.Unchecked)
            self.list.addItem(item)
            if name == current:
                self.list.setCurrentItem(item)
        self._updating = False
        self._on_current_changed(self.list.currentItem(), None)

    def current_layer(self) -> str | None:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    def row_for(self, name: str) -> QListWidgetItem | None:
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == name:
                return self.list.item(i)
        return None

    def _follow_layer(self, name: str) -> None:
        """A layer changed elsewhere (a session, the salience panel): show its new state."""
        row = self.row_for(name)
        if row is None:
            return
        state = self.layers[name]
        self._updating = True
        row.setCheckState(Qt.CheckState.Checked if state.visible else Qt.CheckState.Unchecked)
        if self.current_layer() == name:
            self.opacity.setValue(round(state.opacity * 100))
        self._updating = False

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        if not self._updating:
            self.layers.set_visible(item.data(Qt.ItemDataRole.UserRole),
                                    item.checkState() == Qt.CheckState.Checked)

    def _on_current_changed(self, item, _previous) -> None:
        """The slider shows the selected layer's opacity; with none selected it rests at full
        opacity (where every new layer starts) and says what it needs, instead of a bare 0."""
        self.opacity.setEnabled(item is not None)
        self.opacity_label.setText("Opacity" if item is not None else "Opacity: select a layer")
        state = self.layers[item.data(Qt.ItemDataRole.UserRole)] if item is not None else None
        self._updating = True
        self.opacity.setValue(round(state.opacity * 100) if state is not None else 100)
        self._updating = False

    def _on_opacity(self, value: int) -> None:
        name = self.current_layer()
        if name is not None and not self._updating:
            self.layers.set_opacity(name, value / 100.0)
