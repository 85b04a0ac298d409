"""Draws the app icon (ssjdn-explorer.png): a tile grid over terrain with a search lens.

Run once with `QT_QPA_PLATFORM=offscreen python resources/icons/make_icon.py`; the PNG is
committed, so the app never draws it at start-up.
"""
from pathlib import Path

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QGuiApplication, QImage, QLinearGradient, QPainter, QPen


def draw(size: int = 256) -> QImage:
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    p = QPainter(image)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    s = size / 256
    ground = QLinearGradient(0, 0, size, size)
    ground.setColorAt(0, QColor("#5b8c3a"))
    ground.setColorAt(0.55, QColor("#a8a060"))
    ground.setColorAt(1, QColor("#3f6f8f"))
    p.setBrush(ground)
    p.setPen(Qt.PenStyle.NoPen)
    p.drawRoundedRect(QRectF(8 * s, 8 * s, 240 * s, 240 * s), 36 * s, 36 * s)
    p.setPen(QPen(QColor(255, 255, 255, 140), 4 * s))
    for i in range(1, 4):
        p.drawLine(QPointF(8 * s + i * 60 * s, 12 * s), QPointF(8 * s + i * 60 * s, 244 * s))
        p.drawLine(QPointF(12 * s, 8 * s + i * 60 * s), QPointF(244 * s, 8 * s + i * 60 * s))
    p.setPen(QPen(QColor("#00e5ff"), 10 * s))
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.drawRect(QRectF(68 * s, 68 * s, 60 * s, 60 * s))
    p.setPen(QPen(QColor("#202428"), 22 * s, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
    p.drawLine(QPointF(170 * s, 170 * s), QPointF(224 * s, 224 * s))
    p.setPen(QPen(QColor("#202428"), 14 * s))
    p.setBrush(QColor(255, 255, 255, 70))
    p.drawEllipse(QPointF(128 * s, 128 * s), 58 * s, 58 * s)
    p.end()
    return image


if __name__ == "__main__":
    app = QGuiApplication([])
    draw(256).save(str(Path(__file__).with_name("ssjdn-explorer.png")))
