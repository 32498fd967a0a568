"""Dedup's decision at scale: driver peak memory and time per record, in one process (the local
runner's path) and as map/reduce tasks on a local Ray (the Ray runner's path), on signatures
generated directly (no images): 100k, 400k and 1.6M records in shards of 10,000, with planted
duplicates of every kind (repeated ids, exact and near images, flips, shared and near captions).
Also a hot bucket: 100k records sharing one perceptual hash, and 100k distinct hashes sharing
all but 24 bits (near-uniform images).

Each measurement runs in a fresh process, so that its peak RSS is its own (the signatures are
generated in another one: a child's peak RSS on Linux starts at its parent's when it was forked),
and the two paths' decisions are compared record for record.

    python -m benchmarks.bench_dedup_scale [--sizes 100000,400000,1600000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SHARD = 10_000


def _hex(v: int) -> str:
    return f"{v:016x}"


def generate(folder: Path, n: int, seed: int = 0) -> list[tuple[int, str]]:
    """Signature files of ``n`` records; about 1 % each of repeated ids, exact copies, near copies
    (1-3 bits), flipped copies (the mirror's hash), shared captions and near captions."""
    from recaption.io.signatures import record_key
    from recaption.stages.dedup import Dedup

    rng = np.random.default_rng(seed)
    stage = Dedup()
    mh = stage.minhasher
    phash = rng.integers(0, 2**63, n, dtype=np.uint64)
    mirror = rng.integers(0, 2**63, n, dtype=np.uint64)
    sha = rng.integers(1, 2**63, n, dtype=np.uint64)
    pixels = rng.integers(10_000, 1_000_000, n)
    ids = [f"img{i}" for i in range(n)]
    minhash = rng.integers(0, 2**31, (n, mh.num_perm), dtype=np.uint32)
    text = rng.integers(1, 2**63, n, dtype=np.uint64)
    src = rng.integers(0, n, n)
    kind = rng.random(n)
    for i in np.flatnonzero(kind < 0.06):
        j = int(src[i])
        if j == i:
            continue
        k = kind[i]
        if k < 0.01:
            ids[i] = ids[j]
        elif k < 0.02:
            sha[i], phash[i], mirror[i] = sha[j], phash[j], mirror[j]
        elif k < 0.03:
            bits = rng.choice(64, int(rng.integers(1, 4)), replace=False)
            phash[i] = phash[j] ^ np.uint64(sum(1 << int(b) for b in bits))
        elif k < 0.04:
            phash[i], mirror[i] = mirror[j], phash[j]
        elif k < 0.05:
            text[i], minhash[i] = text[j], minhash[j]
        else:  # a near caption: 90 % of the MinHash values the same
            minhash[i] = minhash[j]
            change = rng.choice(mh.num_perm, mh.num_perm // 10, replace=False)
            minhash[i, change] = rng.integers(0, 2**31, len(change), dtype=np.uint32)
    shards = []
    for s, start in enumerate(range(0, n, SHARD)):
        path = folder / f"shard{s:05d}.jsonl"
        with open(path, "w") as fh:
            for pos, i in enumerate(range(start, min(n, start + SHARD))):
                sig = {"id": ids[i], "sha": _hex(int(sha[i])), "phash": _hex(int(phash[i])), "phash_mirror": _hex(int(mirror[i])),
                       "phash_windows": None, "pixels": int(pixels[i]), "text": int(text[i]), "minhash": minhash[i].tobytes().hex()}
                fh.write(json.dumps([record_key(s, pos), sig]) + "\n")
        shards.append((s, str(path)))
    return shards


def run_local(shards: list[tuple[int, str]], out: str) -> dict:
    from recaption.stages.dedup import Dedup

    def stream():
        for _, path in shards:
            with open(path) as fh:
                for line in fh:
                    key, sig = json.loads(line)
                    yield key, sig

    start = time.perf_counter()
    decisions = Dedup().decide(stream())
    seconds = time.perf_counter() - start
    return _finish(decisions, seconds, out)


def run_ray(shards: list[tuple[int, str]], out: str, records: int) -> dict:
    import ray

    from recaption.runners.task_pools import RayTasks
    from recaption.stages.dedup import Dedup

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        start = time.perf_counter()
        decisions = Dedup().decide_in_tasks(RayTasks(ray), shards, str(Path(out).parent / "work"), records)
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    return _finish(decisions, seconds, out)


def _finish(decisions: Any, seconds: float, out: str) -> dict:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the digest below adds its own
    plain = sorted((k, d.reject, sorted(d.scores.items()), sorted(d.meta.items())) for k, d in decisions.items())
    digest = hashlib.sha256(json.dumps(plain).encode()).hexdigest()[:16]  # of the content (a pickle depends on object identity)
    reasons: dict[str, int] = {}
    for d in decisions.values():
        r = d.reject[0] if d.reject else "flagged"
        reasons[r] = reasons.get(r, 0) + 1
    result = {"seconds": round(seconds, 2), "peak_rss_mib": round(peak),
              "decisions": len(decisions), "digest": digest, "by_reason": reasons}
    Path(out).write_text(json.dumps(result))
    return result


def hot_bucket(n: int = 100_000) -> dict:
    """One perceptual hash for 100k records; then 100k distinct hashes sharing 40 zero bits."""
    from recaption.dedup.hashes import HotBuckets, near_hash_pairs

    out = {}
    start = time.perf_counter()
    pairs = near_hash_pairs(np.zeros(n, np.uint64), 4)
    out["one_phash_100k"] = {"seconds": round(time.perf_counter() - start, 3), "pairs": len(pairs)}
    rng = np.random.default_rng(0)
    hashes = rng.choice(2**24, n, replace=False).astype(np.uint64) << np.uint64(40)
    hot = HotBuckets()
    start = time.perf_counter()
    pairs = near_hash_pairs(hashes, 4, hot=hot)
    out["shared_40_bits_100k"] = {"seconds": round(time.perf_counter() - start, 3), "pairs": len(pairs), **vars(hot)}
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,400000,1600000")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "SHARDS", "OUT"))
    args = ap.parse_args()
    if args.child:
        mode, shards_file, out = args.child
        shards = [tuple(s) for s in json.loads(Path(shards_file).read_text())] if mode in ("local", "ray") else []
        if mode == "generate":
            n = int(shards_file)
            Path(out).write_text(json.dumps(generate(Path(out).parent, n)))
        elif mode == "local":
            run_local(shards, out)
        elif mode == "ray":
            run_ray(shards, out, sum(1 for _, p in shards for _ in open(p)))
        else:
            Path(out).write_text(json.dumps(hot_bucket()))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        hot = Path(tmp) / "hot.json"
        subprocess.run([sys.executable, "-m", "benchmarks.bench_dedup_scale", "--child", "hot", "-", str(hot)], check=True)
        results["hot_bucket"] = json.loads(hot.read_text())
        print(json.dumps(results["hot_bucket"]), flush=True)
        for n in (int(x) for x in args.sizes.split(",")):
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "benchmarks.bench_dedup_scale", "--child", "generate", str(n), str(folder / "shards.json")], check=True)
            shards = [tuple(s) for s in json.loads((folder / "shards.json").read_text())]
            row = {"records": n, "generate_s": round(time.perf_counter() - start, 1)}
            for mode in ("local", "ray"):
                out = folder / f"{mode}.json"
                subprocess.run([sys.executable, "-m", "benchmarks.bench_dedup_scale", "--child", mode, str(folder / "shards.json"), str(out)], check=True)
                row[mode] = json.loads(out.read_text())
                row[mode]["us_per_record"] = round(1e6 * row[mode]["seconds"] / n, 1)
            row["identical"] = row["local"]["digest"] == row["ray"]["digest"]
            results[n] = row
            print(json.dumps(row), flush=True)
            for _, path in shards:
                Path(path).unlink()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
