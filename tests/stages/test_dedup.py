import io

import numpy as np
import pytest
from PIL import Image

from recaption.record import Pair
from recaption.stages.dedup import Dedup, _UnionFind, near_hash_pairs


def components(n: int, pairs) -> set[frozenset[int]]:
    uf = _UnionFind(n)
    for a, b in pairs:
        uf.union(int(a), int(b))
    return {frozenset(g) for g in uf.groups().values()}


def brute_force(hashes: np.ndarray, radius: int) -> set[tuple[int, int]]:
    out = set()
    for i in range(len(hashes)):
        d = np.bitwise_count(hashes[i] ^ hashes[i + 1 :])
        for j in np.nonzero(d <= radius)[0]:
            out.add((i, i + 1 + int(j)))
    return out


@pytest.mark.parametrize(
    "radius,plan",
    [(0, "exact_blocks"), (2, "exact_blocks"), (4, "exact_blocks"), (8, "exact_blocks"),
     (2, "blocks_within_one_bit"), (4, "blocks_within_one_bit")],
)
def test_near_hash_pairs_equal_brute_force(radius, plan, monkeypatch):
    if plan == "blocks_within_one_bit":  # the plan large inputs get; force it on a small one
        from recaption.stages import dedup

        monkeypatch.setattr(dedup, "_block_plan", lambda n, r: (-(-(r + 1) // 2), 1))
    rng = np.random.default_rng(radius)
    base = rng.integers(0, 2**63, 300, dtype=np.uint64)
    # Plant near copies: flip a few random bits of some hashes, and exact copies.
    copies = []
    for k in range(120):
        h = int(base[k % 300])
        for bit in rng.choice(64, size=int(rng.integers(0, 7)), replace=False):
            h ^= 1 << int(bit)
        copies.append(h)
    hashes = np.concatenate([base, np.array(copies, dtype=np.uint64), base[:5]])
    found = near_hash_pairs(hashes, radius)
    assert all(np.bitwise_count(hashes[a] ^ hashes[b]) <= radius for a, b in found)
    # Exact copies are linked through their first occurrence, so compare the groups.
    assert components(len(hashes), found) == components(len(hashes), brute_force(hashes, radius))


def sig(i, image_id, sha, phash, pixels=100, text="t"):
    """A record's signature, made by the stage itself from a Pair, as the runner does."""
    pair = Pair(image_id, None, texts=[text], scores={"sha256": sha.ljust(64, "0"), "phash": phash, "width": pixels, "height": 1})
    return (f"0:{i}", Dedup().signature(pair))


def test_image_duplicates_keep_the_largest_then_the_earliest():
    sigs = [
        sig(0, "a", "a1", "0000000000000000", 100, "first"),
        sig(1, "b", "a2", "0000000000000003", 400, "second"),  # near a, bigger: survives
        sig(2, "c", "a1", "0000000000000000", 100, "third"),  # exact copy of a
        sig(3, "d", "a4", "ffffffffffffffff", 100, "fourth"),
    ]
    d = Dedup(near_text=False).decide(sigs)
    assert d["0:2"].reject == ("exact_image", "duplicate of 'a'")
    assert d["0:0"].reject == ("near_image", "duplicate of 'b'")
    assert "0:1" not in d and "0:3" not in d


def test_duplicate_ids_keep_the_first():
    sigs = [sig(0, "a", "b1", "00000000000000ff"), sig(1, "a", "b2", "ff00000000000000")]
    d = Dedup().decide(sigs)
    assert d["0:1"].reject[0] == "duplicate_id"
    assert "0:0" not in d


def test_same_caption_on_different_images_is_flagged_or_rejected():
    sigs = [
        sig(0, "a", "b1", "00000000000000ff", text="image"),
        sig(1, "b", "b2", "ff00000000000000", text="image"),
        sig(2, "c", "b3", "0f0f0f0f0f0f0f0f", text="a cat on a red sofa in the sun"),
        sig(3, "d", "b4", "f0f0f0f0f0f0f0f0", text="a cat on a red sofa in the sun!"),
        sig(4, "e", "b5", "3333333333333333", text="something else entirely"),
    ]
    flagged = Dedup().decide(sigs)
    assert flagged["0:0"].scores == {"text_dup_count": 2} and flagged["0:0"].reject is None
    assert flagged["0:1"].meta == {"text_dup_of": "a"}
    assert flagged["0:3"].meta == {"text_dup_of": "c"}  # near text
    assert "0:4" not in flagged
    rejected = Dedup(text_action="reject").decide(sigs)
    assert rejected["0:1"].reject == ("duplicate_text", "same caption as 'a'")
    assert rejected["0:0"].reject is None


def test_near_text_threshold():
    sigs = [
        sig(0, "a", "b1", "00000000000000ff", text="a golden retriever playing fetch on the beach at sunset"),
        sig(1, "b", "b2", "ff00000000000000", text="a black cat sleeping on a windowsill in the rain"),
    ]
    assert Dedup().decide(sigs) == {}


def test_minhash_agreement_estimates_jaccard():
    from recaption.stages.dedup import MinHasher

    mh = MinHasher(num_perm=256, bands=32)
    a = "a golden retriever playing fetch on the beach at sunset with a red ball"
    b = a + " today"
    sa, sb = set(mh.shingles(a).tolist()), set(mh.shingles(b).tolist())
    true = len(sa & sb) / len(sa | sb)
    estimate = (mh.signature(a) == mh.signature(b)).mean()
    assert abs(estimate - true) < 0.1
    assert (mh.signature("x") == mh.signature("x")).all()


def test_decide_takes_a_stream_and_scales_to_many_records():
    rng = np.random.default_rng(0)
    n = 20_000

    def stream():
        for i in range(n):
            yield sig(i, f"id{i}", f"{i + 1:016x}", f"{int(rng.integers(0, 2**63)):016x}", text=f"caption number {i} {i * 7919 % 10007}")

    decisions = Dedup().decide(stream())
    assert len(decisions) < n * 0.01  # random hashes and distinct texts: almost nothing to decide


def planted_copies() -> tuple[list[Pair], dict[str, str]]:
    """Distinct photo tiles (scikit-image's real photos cut in pieces) and copies of some, each
    made by one kind of edit; returns the pairs and copy id -> kind."""
    from PIL import ImageDraw, ImageEnhance, ImageOps

    from tests.conftest import encode, photo

    tiles = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry"):
        img = photo(name).convert("RGB")
        w, h = img.size
        for i in range(3):
            for j in range(2):
                tiles.append(img.crop((i * w // 3, j * h // 2, (i + 1) * w // 3, (j + 1) * h // 2)).resize((160, 160)))
    edits = {
        "exact": lambda t: t,
        "reencode": lambda t: Image.open(io.BytesIO(encode(t, quality=60))),
        "resize": lambda t: t.resize((96, 96)),
        "brightness": lambda t: ImageEnhance.Brightness(t).enhance(1.15),
        "flip": ImageOps.mirror,
        "watermark": lambda t: _watermarked(t, ImageDraw),
    }
    pairs = [Pair(f"tile{k}", encode(t), texts=[f"tile {k}"]) for k, t in enumerate(tiles)]
    kinds = {}
    for k, tile in enumerate(tiles[:24]):
        kind = list(edits)[k % len(edits)]
        copy_id = f"copy{k}-{kind}"
        pairs.append(Pair(copy_id, encode(edits[kind](tile).convert("RGB")), texts=[f"copy {k}"]))
        kinds[copy_id] = kind
    return pairs, kinds


def _watermarked(tile, image_draw):
    marked = tile.copy()
    image_draw.Draw(marked).text((8, 140), "(c) stock", fill=(255, 255, 255))
    return marked


def test_planted_copies_are_found_whatever_the_edit_and_no_distinct_tile_is_dropped():
    from recaption.stages.image import ImageCheck

    pairs, kinds = planted_copies()
    ImageCheck(min_side=32)(pairs)
    stage = Dedup(near_text=False, exact_text=False)
    decisions = stage.decide((f"0:{i}", stage.signature(p)) for i, p in enumerate(pairs))
    dropped = {pairs[int(k.split(":")[1])].image_id for k, d in decisions.items() if d.reject}
    assert not {p.image_id for p in pairs if p.image_id.startswith("tile")} & dropped  # no distinct tile lost
    found = {kind: sum(1 for c, k in kinds.items() if k == kind and c in dropped) for kind in set(kinds.values())}
    assert found == {kind: 4 for kind in set(kinds.values())}, found  # flips too: the mirror's hash is searched
