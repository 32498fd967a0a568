"""OCR that installs offline: RapidOCR (PP-OCRv4 detection and recognition, bundled ONNX)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from recaption.imaging import to_bgr_array
from recaption.models.hashing import file_hash


@dataclass(frozen=True)
class TextLine:
    text: str
    confidence: float
    box: list[list[float]]  # four corners, in the pixels of the image given to ``read``

    def area(self) -> float:
        """The box's area (shoelace formula: boxes may be rotated)."""
        xs = [p[0] for p in self.box]
        ys = [p[1] for p in self.box]
        return 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))


class TextReader:
    def __init__(self, min_confidence: float = 0.5, threads: int = 1) -> None:
        from rapidocr_onnxruntime import RapidOCR  # noqa: PLC0415 - loads onnxruntime

        # One worker per core: onnxruntime's default of all cores per session only fights
        # the other workers.
        # Detection runs at the size of the image it is given (the stage bounds it): RapidOCR's
        # own rule ("max" limits are raised to 960 px and more, "min" ones upscale) would
        # otherwise decide, and detection time grows with the pixel count.
        self.engine = RapidOCR(
            text_score=min_confidence,
            intra_op_num_threads=threads,
            inter_op_num_threads=1,
            det_limit_type="min",
            det_limit_side_len=32,
        )
        import rapidocr_onnxruntime  # noqa: PLC0415 - RapidOCR and ONNX Runtime, loaded only where it is used

        models = sorted(Path(rapidocr_onnxruntime.__file__).parent.glob("models/*.onnx"))
        self.model_hash = "rapidocr:" + ":".join(file_hash(m)[:8] for m in models) + f":min_conf{min_confidence}"

    def read(self, image: Image.Image) -> list[TextLine]:
        bgr = to_bgr_array(image)
        result, _ = self.engine(bgr)
        return [TextLine(str(text), float(conf), [[float(x), float(y)] for x, y in box]) for box, text, conf in (result or [])]
