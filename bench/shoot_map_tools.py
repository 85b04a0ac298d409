"""Screenshots of the map's tools on real scenes for docs/desktop.md (issue 18 items 3, 5, 7).

    QT_QPA_PLATFORM=offscreen python bench/shoot_map_tools.py --scene SCENE.tif --query "..." \
        [--weak-query "..."] [--geographic-scene SCENE_4326.tif] [--training] --out docs/screenshots

Writes likelihood.png (a search with the shipped model's match likelihood: hits under the
threshold not drawn, the heatmap transparent there), no_match.png (with --weak-query), measure.png (a measured polygon and the
scale bar), reprojection.png (an EPSG:4326 scene drawn in UTM) and, with --training,
training.png (the training dialog's estimate and chart during a short tiny-model run).
Indexes and preferences go to a temporary folder, never the user's.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def wait_until(app, condition, timeout_s: float = 900) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise TimeoutError("gave up waiting")
        app.processEvents()
        time.sleep(0.02)


def open_indexed(app, window, scene: str) -> None:
    window.open_rasters([scene])
    window.load_model()
    wait_until(app, lambda: window.model.index is not None and not window.is_busy())


def search(app, window, query: str, k: int) -> None:
    finished = []
    window.searchFinished.connect(lambda hits: finished.append(hits))
    window.search_panel.query.setText(query)
    window.search_panel.k.setValue(k)
    window.search(query, k)
    wait_until(app, lambda: finished and not window.is_busy())


def settle(app, window) -> None:
    window.map_view.refresh_details()
    wait_until(app, window.map_view.details_settled, 120)
    for _ in range(20):
        app.processEvents()


def new_window(size=(1400, 860)):
    from ssjdn.desktop.qt_main import QtMainWindow
    from ssjdn.core.model.spec import SHIPPED
    from ssjdn.desktop.state import Session
    window = QtMainWindow(Session(model_spec=SHIPPED, device="cpu"))
    window.resize(*size)
    window.show()
    return window


def shoot_search_and_measure(app, args, out: Path) -> None:
    window = new_window()
    open_indexed(app, window, args.scene)
    search(app, window, args.query, args.k)
    window.map_view.fit_all()
    settle(app, window)
    window.grab().save(str(out / "likelihood.png"))
    print("likelihood:", window.search_panel.status.text())
    if args.weak_query:   # a query nothing in the scene matches: "no good match in this area"
        search(app, window, args.weak_query, args.k)
        settle(app, window)
        window.grab().save(str(out / "no_match.png"))
        print("no match:", window.search_panel.status.text())
    # A polygon around the middle of the scene, clicked as a user would.
    view = window.map_view
    window.measure_action.trigger()
    rect = next(iter(view.rasters.values())).sceneBoundingRect()
    for fx, fy in ((0.30, 0.35), (0.62, 0.30), (0.70, 0.62), (0.38, 0.70)):
        x, y = rect.left() + fx * rect.width(), rect.top() + fy * rect.height()
        view.add_measure_point(*view.frame.scene_to_map(x, y))
    view.finish_measure()
    view.layers.set_visible("hits", False)
    for name in [n for n in view.layers if n.startswith("heatmap:")]:
        view.layers.set_visible(name, False)
    settle(app, window)
    window.grab().save(str(out / "measure.png"))
    print("measure:", view.measure_text(), "| scale bar:", view.scale_bar.text)
    window.close()


def shoot_reprojection(app, args, out: Path) -> None:
    window = new_window()
    window.model.auto_index = False
    window.open_rasters([args.geographic_scene])
    window.map_view.fit_all()
    settle(app, window)
    window.grab().save(str(out / "reprojection.png"))
    print("reprojection: map CRS", window.map_view.frame.describe())
    window.close()


def shoot_training(app, args, out: Path) -> None:
    window = new_window((1400, 900))
    window.model.auto_index = False
    window.dialogs.open_training_dialog()
    dialog = window.dialogs.training_dialog
    dialog.resize(820, 760)
    if args.ucm:
        dataset = args.ucm
    else:   # the tests' small synthetic UCM-format dataset: a run of a few epochs in a minute
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from caption_fixtures import write_ucm_json
        dataset = Path(tempfile.mkdtemp(prefix="ssjdn-shoot-ucm-"))
        write_ucm_json(dataset, {"train": 60, "val": 12, "test": 4})
    dialog.dataset.setText(str(dataset))
    dialog.config.setCurrentIndex(dialog.config.findText("tiny"))
    dialog.device.setCurrentText("cpu")
    dialog.epochs.setValue(args.epochs)
    dialog.output.setText(tempfile.mkdtemp(prefix="ssjdn-shoot-runs-"))
    dialog.start_training()
    wait_until(app, lambda: len(dialog.chart.val) >= args.epochs - 1 and dialog.estimate.text(), 1200)
    dialog.grab().save(str(out / "training.png"))
    print("training:", dialog.state.text(), "|", dialog.estimate.text())
    dialog.stop_training()
    window.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", required=True)
    parser.add_argument("--query", required=True)
    parser.add_argument("-k", type=int, default=20)
    parser.add_argument("--weak-query", help="also shoot no_match.png for this query")
    parser.add_argument("--geographic-scene")
    parser.add_argument("--training", action="store_true", help="also shoot training.png")
    parser.add_argument("--ucm", help="dataset for the training shot (default: the tests' synthetic one; "
                        "UCM-Captions itself takes ~15 min an epoch with the tiny model on 2 cores)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the training shot's run")
    parser.add_argument("--out", default="docs/screenshots")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="ssjdn-shoot-")
    os.environ.setdefault("SSJDN_CACHE_DIR", str(Path(scratch) / "cache"))
    os.environ.setdefault("SSJDN_CONFIG_DIR", str(Path(scratch) / "config"))
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication(sys.argv[:1])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shoot_search_and_measure(app, args, out)
    if args.geographic_scene:
        shoot_reprojection(app, args, out)
    if args.training:
        shoot_training(app, args, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
