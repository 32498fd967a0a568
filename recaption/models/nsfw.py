"""NSFW and face detection that installs offline: NudeNet (bundled 320n ONNX detector)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from recaption.imaging import to_bgr_array
from recaption.models.hashing import file_hash

# The detector's classes that make an image not safe for work. Exposed bellies, feet,
# armpits and male chests are ordinary in photos and do not count.
NSFW_CLASSES = frozenset({
    "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_EXPOSED",
})
FACE_CLASSES = frozenset({"FACE_FEMALE", "FACE_MALE"})


@dataclass(frozen=True)
class NsfwResult:
    nsfw: float  # the highest score among NSFW_CLASSES, 0 when none was detected
    faces: int  # faces detected with at least ``face_min_score``
    detections: list[dict]


class NsfwDetector:
    def __init__(self, face_min_score: float = 0.5, threads: int = 1) -> None:
        import nudenet  # noqa: PLC0415 - loads onnxruntime
        import onnxruntime  # noqa: PLC0415

        model = Path(nudenet.__file__).parent / "320n.onnx"
        self.detector = nudenet.NudeDetector(model_path=str(model))
        # NudeNet opens its session with every core; one worker per core wants one thread each.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.detector.onnx_session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.face_min_score = face_min_score
        self.model_hash = f"nudenet-320n:{file_hash(model)[:8]}:res{self.detector.input_width}"

    def detect(self, image: Image.Image) -> NsfwResult:
        bgr = to_bgr_array(image)
        detections = self.detector.detect(bgr)
        nsfw = max((d["score"] for d in detections if d["class"] in NSFW_CLASSES), default=0.0)
        faces = sum(1 for d in detections if d["class"] in FACE_CLASSES and d["score"] >= self.face_min_score)
        kept = [{"class": d["class"], "score": round(float(d["score"]), 4), "box": [int(v) for v in d["box"]]} for d in detections]
        return NsfwResult(float(nsfw), faces, kept)
