"""NSFW and face detection that installs offline: NudeNet (bundled 320n ONNX detector)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from recaption.imaging import to_bgr_array
from recaption.models.hashing import file_hash

# The detector's classes that make an image not safe for work. Exposed bellies, feet,
# armpits and male chests are ordinary in photos and do not count.
NSFW_CLASSES = frozenset({
    "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_EXPOSED",
})
FACE_CLASSES = frozenset({"FACE_FEMALE", "FACE_MALE"})
# The 320n detector's classes, in the order of its output (NudeNet's own list).
LABELS = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED", "FEET_COVERED", "ARMPITS_COVERED",
    "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)


@dataclass(frozen=True)
class NsfwResult:
    nsfw: float  # the highest score among NSFW_CLASSES, 0 when none was detected
    faces: int  # faces detected with at least ``face_min_score``
    detections: list[dict]


def detections_of(output: np.ndarray, x_pad: int, y_pad: int, width: int, height: int, model_width: int, model_height: int) -> list[dict]:
    """NudeNet's post-processing (``nudenet.nudenet._postprocess``: candidates scoring 0.2 or
    more, boxes back in the image's pixels, non-maximum suppression at 0.25 / 0.45) with arrays:
    its loop over the 2,100 candidates of a 320-px input took 5 ms an image, a fifth of the
    detector's time."""
    import cv2  # noqa: PLC0415 - NudeNet's dependency

    rows = np.squeeze(output, axis=0).T  # (candidates, 4 box values + one score per class)
    class_scores = rows[:, 4:]
    best = class_scores.max(axis=1)
    keep = best >= 0.2
    rows, best, class_ids = rows[keep], best[keep], class_scores[keep].argmax(axis=1)
    x = (rows[:, 0] - rows[:, 2] / 2) * (width + x_pad) / model_width
    y = (rows[:, 1] - rows[:, 3] / 2) * (height + y_pad) / model_height
    w = rows[:, 2] * (width + x_pad) / model_width
    h = rows[:, 3] * (height + y_pad) / model_height
    x, y = np.clip(x, 0, width), np.clip(y, 0, height)
    w, h = np.minimum(w, width - x), np.minimum(h, height - y)
    boxes = np.stack([x, y, w, h], axis=1).tolist()
    chosen = cv2.dnn.NMSBoxes(boxes, best.tolist(), 0.25, 0.45) if len(boxes) else []
    return [{"class": LABELS[int(class_ids[i])], "score": float(best[i]), "box": [int(v) for v in boxes[i]]} for i in chosen]


class NsfwDetector:
    def __init__(self, face_min_score: float = 0.5, threads: int = 1) -> None:
        import nudenet  # noqa: PLC0415 - loads onnxruntime
        import onnxruntime  # noqa: PLC0415 - ONNX Runtime, loaded only where it is used

        model = Path(nudenet.__file__).parent / "320n.onnx"
        self.detector = nudenet.NudeDetector(model_path=str(model))
        # NudeNet opens its session with every core; one worker per core wants one thread each.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.detector.onnx_session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.face_min_score = face_min_score
        self.model_hash = f"nudenet-320n:{file_hash(model)[:8]}:res{self.detector.input_width}"

    def detect(self, image: Image.Image) -> NsfwResult:
        from nudenet.nudenet import _read_image  # noqa: PLC0415 - NudeNet's own letterbox, so inputs match its detect()

        blob, _, _, x_pad, y_pad, width, height = _read_image(to_bgr_array(image), self.detector.input_width)
        output = self.detector.onnx_session.run(None, {self.detector.input_name: blob})[0]
        detections = detections_of(output, x_pad, y_pad, width, height, self.detector.input_width, self.detector.input_height)
        nsfw = max((d["score"] for d in detections if d["class"] in NSFW_CLASSES), default=0.0)
        faces = sum(1 for d in detections if d["class"] in FACE_CLASSES and d["score"] >= self.face_min_score)
        kept = [{"class": d["class"], "score": round(float(d["score"]), 4), "box": [int(v) for v in d["box"]]} for d in detections]
        return NsfwResult(float(nsfw), faces, kept)
