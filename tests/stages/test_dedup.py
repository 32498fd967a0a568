import io

import numpy as np
import pytest
from PIL import Image

from recaption.dedup.groups import UnionFind as _UnionFind
from recaption.dedup.hashes import near_hash_pairs
from recaption.record import Pair
from recaption.stages.dedup import Dedup


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
        from recaption.dedup import hashes

        monkeypatch.setattr(hashes, "block_plan", lambda n, r: (-(-(r + 1) // 2), 1))
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
    assert "0:3" not in d
    # b survives with nothing to change, marked only for the report's cluster view, with a and
    # a's exact copy c (which went before a did) in its cluster
    assert (d["0:1"].reject, d["0:1"].scores, d["0:1"].meta) == (None, {}, {})
    assert d["0:1"].show == {"cluster": "b · 0:1", "role": "kept", "rule": "most pixels, then earliest, is kept"}
    assert d["0:0"].show["cluster"] == "b · 0:1" and d["0:0"].show["distance"] == 2  # 0x3: two bits
    assert d["0:2"].show == {"cluster": "b · 0:1", "role": "dropped", "rule": "exact copy (same sha256) of 'a'", "distance": 2}


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
    from recaption.dedup.text import MinHasher

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


PLANTED_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry")


def planted_copies(photos: tuple[str, ...] = PLANTED_PHOTOS, grid: tuple[int, int] = (3, 2), copies: int = 30) -> tuple[list[Pair], dict[str, str]]:
    """Distinct photo tiles (scikit-image's real photos cut in a grid) and ``copies`` copies of
    the first tiles, each made by one kind of edit in turn; returns the pairs and copy id -> kind."""
    from PIL import ImageDraw, ImageEnhance, ImageOps

    from tests.conftest import encode, photo

    tiles = []
    for name in photos:
        img = photo(name).convert("RGB")
        w, h = img.size
        for i in range(grid[0]):
            for j in range(grid[1]):
                box = (i * w // grid[0], j * h // grid[1], (i + 1) * w // grid[0], (j + 1) * h // grid[1])
                tiles.append(img.crop(box).resize((160, 160)))
    edits = {
        "exact": lambda t: t,
        "reencode": lambda t: Image.open(io.BytesIO(encode(t, quality=60))),
        "resize": lambda t: t.resize((96, 96)),
        "brightness": lambda t: ImageEnhance.Brightness(t).enhance(1.15),
        "flip": ImageOps.mirror,
        "watermark": lambda t: _watermarked(t, ImageDraw),
        "crop_side": lambda t: t.crop((8, 0, 160, 160)),  # 5 % off the left
        "crop_corner": lambda t: t.crop((8, 8, 160, 160)),  # 5 % off the left and the top
        "crop_all": lambda t: t.crop((8, 8, 152, 152)),  # 5 % off every side
        "border": lambda t: ImageOps.expand(t, border=8, fill=(0, 0, 0)),
    }
    pairs = [Pair(f"tile{k}", encode(t), texts=[f"tile {k}"]) for k, t in enumerate(tiles)]
    kinds = {}
    for k in range(copies):  # tile k % n gets kinds in turn, so n * len(edits) copies give every tile every kind
        t, turn = k % len(tiles), k // len(tiles)
        kind = list(edits)[(t + turn) % len(edits)]
        copy_id = f"copy{t}_{turn}-{kind}"
        pairs.append(Pair(copy_id, encode(edits[kind](tiles[t]).convert("RGB")), texts=[f"copy {k}"]))
        kinds[copy_id] = kind
    return pairs, kinds


def copies_found(decisions, pairs, kinds) -> tuple[dict[str, float], list[str]]:
    """Per kind, the share of copies that ended in their tile's group; and the tiles that went
    for another tile (a tile may go only for a copy of itself, one with more pixels)."""
    survivor = {pairs[int(k.split(":")[1])].image_id: d.reject[1].split("'")[1] for k, d in decisions.items() if d.reject}

    def group(image_id: str) -> str:
        while image_id in survivor:  # a survivor of one pass may go in a later one
            image_id = survivor[image_id]
        return image_id

    def tile_of(copy_id: str) -> str:
        return "tile" + copy_id[4:].split("_")[0]

    wrong = [t for t, kept in survivor.items() if t.startswith("tile") and not (kept == t or kept.startswith(f"copy{t[4:]}_"))]
    found = {}
    for kind in sorted(set(kinds.values())):
        members = [c for c, k in kinds.items() if k == kind]
        found[kind] = sum(group(c) == group(tile_of(c)) for c in members) / len(members)
    return found, wrong


def _watermarked(tile, image_draw):
    marked = tile.copy()
    image_draw.Draw(marked).text((8, 140), "(c) stock", fill=(255, 255, 255))
    return marked


def test_planted_copies_are_found_whatever_the_edit_and_no_distinct_tile_is_dropped():
    from recaption.stages.image import ImageCheck

    pairs, kinds = planted_copies()
    ImageCheck(min_side=32)(pairs)
    stage = Dedup(near_text=False, exact_text=False, near_crops=True)
    decisions = stage.decide((f"0:{i}", stage.signature(p)) for i, p in enumerate(pairs))
    found, wrong = copies_found(decisions, pairs, kinds)
    assert wrong == []  # no distinct tile lost
    # Flips through the mirror's hash, crops and borders through the windows' hashes.
    assert len(found) == 10 and sum(found.values()) / len(found) >= 0.95, found
    assert all(found[k] == 1.0 for k in ("exact", "flip", "crop_side", "crop_corner", "crop_all", "border")), found
    # By default (no windows) flips are still found, and borders (the frame is trimmed before
    # hashing); crops mostly are not.
    stage = Dedup(near_text=False, exact_text=False)
    found, wrong = copies_found(stage.decide((f"0:{i}", stage.signature(p)) for i, p in enumerate(pairs)), pairs, kinds)
    assert wrong == [] and found["flip"] == 1.0 and found["border"] == 1.0 and found["crop_all"] < 1.0


def test_no_signature_at_all_decides_nothing():
    for crops in (False, True):
        assert Dedup(near_crops=crops).decide(iter(())) == {}
