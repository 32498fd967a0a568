"""Hostile inputs, one record at a time: is each handled with a named reject, does any print a
traceback or stop a run, and what is the worst time and memory one record costs?

Every case is a run of its own (``recaption run --recipe clean`` in a fresh process) on a
JSONL (or tar, Parquet file, image folder) holding one good pair and the hostile record; a
few cases add arguments (an output format) that the defect needs. A case is handled when the run
exits 0, keeps the good pair, and either rejects the hostile record with a named
``stage/reason`` (not ``STAGE/error``) or keeps it where it is a valid record (the long texts
that once made the text rules quadratic), printing no traceback. Seconds and peak memory are the run's, next to a
run of the good pair alone, so the difference is what the hostile record cost.

    python -m benchmarks.bench_hostile
    python -m benchmarks.bench_hostile --gzip-bomb-versus OTHER_CHECKOUT   # a batch's memory, before and after
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recaption.limits import MAX_IMAGE_BYTES, MAX_TEXT_CHARS
from tests.conftest import encode, noise_image, with_lying_header
from tests.test_hostile_input import JSONL_CASES

GOOD = {"image_id": "good", "image_path": "good.jpg", "texts": ["a colourful pattern"]}


def _line(record: dict) -> str:
    return json.dumps(record)


def jsonl_cases() -> dict[str, str]:
    """name -> the hostile JSONL line; the test suite's corpus and larger ones."""
    cases = {name: line for name, (line, reason) in JSONL_CASES.items() if reason is not None}
    near_limit = MAX_TEXT_CHARS - 10
    for unit in ("12-", "black ", "a.", "@a ", "(c) ", "x.jpg ", " ", "smiling ", "a person, "):
        # Text rules at the longest text a record may hold (the patterns that were quadratic).
        cases[f"text_{unit.strip() or 'spaces'}"] = _line({"image_id": "h", "image_path": "other.jpg", "texts": ["a" + unit * (near_limit // len(unit)) + "b"]})
    cases["line_20MB"] = '{"image_id":"h","texts":["' + "x" * 20_000_000 + '"]}'
    cases["line_200MB"] = '{"image_id":"h","texts":["' + "x" * 200_000_000 + '"]}'
    return cases


SECRET = "sk-bench-hostile-secret"


def outside_cases(folder: Path) -> dict[str, str]:
    """Issue 28, defect 1: records that name files outside the input (the secret in the
    environment, the password file, '..', a symlink out) as their image."""
    (folder / "link.jpg").symlink_to(folder.parent / "outside.jpg")
    return {
        "outside_environ": _line({"image_id": "h", "image_path": "/proc/self/environ", "texts": ["the environment"]}),
        "outside_passwd": _line({"image_id": "h", "image_path": "/etc/passwd", "texts": ["the password file"]}),
        "outside_dotdot": _line({"image_id": "h", "image_path": "../outside.jpg", "texts": ["a private photo"]}),
        "outside_symlink": _line({"image_id": "h", "image_path": "link.jpg", "texts": ["a linked photo"]}),
    }


def _npy(array: np.ndarray, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **kwargs)
    return buf.getvalue()


def issue28_cases(folder: Path) -> dict[str, tuple[Path, list[str]]]:
    """name -> (input, extra arguments): the other defects of issue 28, each as a run."""
    out: dict[str, tuple[Path, list[str]]] = {}
    good, image = encode(noise_image(0)), encode(noise_image(1))
    # 4: a shard that keeps nothing, WebDataset output (three content-free alt-texts, then a good pair).
    empty = folder / "empty_shard"
    empty.mkdir(parents=True)
    (empty / "good.jpg").write_bytes(good)
    (empty / "h.jpg").write_bytes(image)
    lines = [_line({"image_id": f"h{i}", "image_path": "h.jpg", "texts": ["IMG_0042.JPG"]}) for i in range(3)] + [_line(GOOD)]
    (empty / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    out["wds_output_empty_shard"] = (empty / "pairs.jsonl", ["--output-format", "webdataset", "--shard-size", "3"])
    # 5: Parquet meta struct with repeated field names; and 50,000 meta keys in one row.
    dup = folder / "parquet_repeated_fields"
    dup.mkdir()
    meta = pa.StructArray.from_arrays([pa.array([1, 2]), pa.array([3, 4]), pa.array([5, 6])], names=["Foo", "foo", "foo"])
    pq.write_table(pa.table({"image_id": ["h", "h2"], "image": [image, image], "texts": [["a red kite"], ["a red kite"]], "meta": meta}), dup / "a.parquet")
    pq.write_table(pa.table({"image_id": ["good"], "image": [good], "texts": [["a colourful pattern"]]}), dup / "b.parquet")
    out["parquet_repeated_fields"] = (dup, [])
    wide = folder / "parquet_50000_meta_keys"
    wide.mkdir()
    rows = [{"image_id": "good", "image": good, "texts": ["a colourful pattern"], "meta": json.dumps({"k": 1})},
            {"image_id": "h", "image": image, "texts": ["a red kite"], "meta": json.dumps({f"k{i}": "v" * 20 for i in range(50_000)})}]
    pq.write_table(pa.Table.from_pylist(rows), wide / "a.parquet")
    out["parquet_50000_meta_keys"] = (wide, [])
    # 7: carried members a loader cannot decode, WebDataset output.
    out["wds_cls_10e29_and_pickled_npy"] = (_tar(folder, "wds_unloadable_members", [("h.jpg", image), ("h.txt", b"a red kite"), ("h.cls", str(10**29).encode()),
                                                                                     ("h.npy", _npy(np.array([{"a": 1}], dtype=object), allow_pickle=True))]),
                                            ["--output-format", "webdataset"])
    # 9: imagefolder metadata naming one image twice (and ./ then plain).
    meta_dup = folder / "metadata_duplicates"
    meta_dup.mkdir()
    (meta_dup / "good.jpg").write_bytes(good)
    (meta_dup / "h.jpg").write_bytes(image)
    (meta_dup / "metadata.jsonl").write_text("\n".join(_line(r) for r in [
        {"file_name": "good.jpg", "text": "a colourful pattern"}, {"file_name": "h.jpg", "text": "a red kite"},
        {"file_name": "./h.jpg", "text": "a blue kite"}, {"file_name": "h.jpg", "text": "a green kite"}]) + "\n")
    out["metadata_duplicate_rows"] = (meta_dup, [])
    # Weaknesses: a 100 MB field in metadata.csv; a lying tar header; a gzip bomb of a tar.
    csv_field = folder / "metadata_csv_100MB_field"
    csv_field.mkdir()
    (csv_field / "good.jpg").write_bytes(good)
    (csv_field / "h.jpg").write_bytes(image)
    with open(csv_field / "metadata.csv", "w", encoding="utf-8") as fh:
        fh.write('file_name,text\ngood.jpg,a colourful pattern\nh.jpg,"')
        for _ in range(100):  # 100 MB, written a megabyte at a time
            fh.write("x" * 1_000_000)
        fh.write('"\n')
    out["metadata_csv_100MB_field"] = (csv_field, [])
    liar = folder / "tar_lying_header"
    liar.mkdir()
    (liar / "00000.tar").write_bytes(with_lying_header([("good.jpg", good), ("good.txt", b"a colourful pattern"), ("h.jpg", image), ("h.txt", b"a red kite"),
                                                    ("s.jpg", encode(noise_image(2))), ("s.txt", b"a swallowed sample"), ("z.jpg", encode(noise_image(3))),
                                                    ("z.txt", b"a last pattern")], liar=2, swallow=3))
    out["tar_lying_header"] = (liar, [])
    out["tar_gzip_bomb_1.4GB"] = (_gzip_bomb(folder / "tar_gzip_bomb", members=24, size=60 << 20), [])
    return out


def _gzip_bomb(folder: Path, members: int, size: int) -> Path:
    """A gzip-compressed tar of ``members`` zero-filled "images" of ``size`` bytes each (each
    under the image limit), written as a stream: this process never holds it, so the runs it
    starts do not inherit its peak memory (a child's peak RSS counts its parent's before exec)."""
    folder.mkdir(parents=True)
    with tarfile.open(folder / "00000.tar", "w:gz", compresslevel=1) as tar:
        for name, data in (("good.jpg", encode(noise_image(0))), ("good.txt", b"a colourful pattern")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for i in range(members):
            info = tarfile.TarInfo(f"h{i}.jpg")
            info.size = size
            with open("/dev/zero", "rb") as zeros:
                tar.addfile(info, zeros)  # tarfile copies exactly info.size bytes, a block at a time
    return folder


def _tar(folder: Path, name: str, members: list[tuple[str, bytes]], compress: bool = False) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for member, data in [("good.jpg", encode(noise_image(0))), ("good.txt", b"a colourful pattern"), *members]:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (folder / name).mkdir(parents=True)
    (folder / name / "00000.tar").write_bytes(gzip.compress(raw.getvalue(), 1) if compress else raw.getvalue())
    return folder / name


def tar_cases(folder: Path) -> dict[str, Path]:
    """name -> a tar shard folder with the good sample and a hostile one."""
    out = {}

    def shard(name: str, members: list[tuple[str, bytes]], compress: bool = False) -> None:
        out[name] = _tar(folder, name, members, compress)

    image = encode(noise_image(1))
    big = bytes(MAX_IMAGE_BYTES + 1)  # one key, several members over the limit, gzip-compressed
    shard("tar_huge_members", [("h.jpg", big), ("h.jpg", big), ("h.png", big), ("h.webp", big), ("h.txt", b"x")], compress=True)
    shard("tar_deep_json", [("h.jpg", image), ("h.json", b'{"d":' + b"[" * 5000 + b"]" * 5000 + b"}")])
    shard("tar_huge_int", [("h.jpg", image), ("h.json", b'{"n":' + b"9" * 5000 + b"}")])
    shard("tar_absolute_path", [("/etc/h.jpg", image)])
    shard("tar_dotdot", [("../h.jpg", image)])
    return out


def run_case(input_path: Path, output: Path, extra: list[str] | None = None, checkout: Path | None = None) -> dict:
    """One `recaption run` in a fresh process (of this checkout, or of ``checkout``): exit
    code, wall seconds, peak MiB, traceback, counts."""
    code = (
        "import json, sys, time\n"
        "from recaption.cli import main\n"
        "t = time.perf_counter()\n"
        f"rc = main(['run', {str(input_path)!r}, {str(output)!r}, '--recipe', 'clean', '--workers', '1', '--no-progress', *{extra or []!r}])\n"
        # VmHWM: this process's own peak since exec. ru_maxrss would count the parent's memory
        # at the fork (Linux keeps the larger), which hid every case below the parent's size.
        "hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
        "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t, 'peak_mib': hwm / 1024}))\n"
    )
    env = {**os.environ, "RECAPTION_BENCH_SECRET": SECRET, **({"PYTHONPATH": str(checkout)} if checkout else {})}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env, cwd=checkout)
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {"rc": proc.returncode, "seconds": None, "peak_mib": None}
    result["traceback"] = "Traceback" in proc.stderr
    stats_path = output / "stats.json"
    result["stats"] = json.loads(stats_path.read_text()) if stats_path.exists() else None
    written = b"".join(p.read_bytes() for p in sorted(output.rglob("*")) if p.is_file() and not p.is_symlink()) if output.exists() else b""
    result["leaked"] = SECRET.encode() in written or b"root:x:0:0" in written or b"bench-outside-photo" in written
    return result


def review_burst(folder: Path, clients: int = 200) -> float:
    """The review page under ``clients`` requests at once on 6 pairs: the slowest answer, s."""
    from recaption.review.server import ReviewServer
    from recaption.review.session import ReviewSession
    from tests.review.test_server import burst

    (folder / "images").mkdir(parents=True)
    records = []
    for i in range(6):
        (folder / "images" / f"{i}.jpg").write_bytes(encode(noise_image(i)))
        records.append(_line({"image_id": f"img-{i}", "image_path": f"images/{i}.jpg", "texts": [f"a red car {i}"]}))
    (folder / "pairs.jsonl").write_text("\n".join(records) + "\n")
    server = ReviewServer(ReviewSession.open(folder / "pairs.jsonl"), "bench").start()
    try:
        return max(burst([server.url + ("api/state" if k % 2 else f"image/{k % 6}") for k in range(clients)]))
    finally:
        server.stop()


KEY = "sk-bench-hostile-api-key"


def server_cases(folder: Path) -> list[tuple[str, str, float, float, bool]]:
    """Issue 28, defects 2, 3 and 6: `recaption run` with vlm_caption against a hostile
    OpenAI-compatible server on 127.0.0.1 (each case a run of two images). Returns
    (case, outcome, seconds, peak MiB, the key reached another host)."""
    from tests.stages.test_vlm_server import Stub, serve

    (folder / "images").mkdir(parents=True)
    records = []
    for i in range(2):
        (folder / "images" / f"{i}.jpg").write_bytes(encode(noise_image(20 + i)))
        records.append(_line({"image_id": f"p{i}", "image_path": f"images/{i}.jpg", "texts": [f"a colourful pattern {i}"]}))
    (folder / "pairs.jsonl").write_text("\n".join(records) + "\n")
    stub, elsewhere = Stub(), Stub()
    server, url = serve(stub)
    other, other_url = serve(elsewhere)
    recipe = folder / "server.yaml"
    recipe.write_text(
        "name: hostile-server\nstages:\n  - image_check: {}\n  - vlm_caption:\n"
        f"      {{backend: openai, base_url: '{url}', model: tiny-vlm, template: plain, names: false, n: 1,\n"
        "       max_new_tokens: 8000, request_timeout: 5, max_retries: 0, api_key_env: RECAPTION_BENCH_KEY}\n"
    )
    cases = {
        "server_redirect_to_other_host": dict(hostile="redirect", redirect_to=other_url.replace("127.0.0.1", "localhost") + "/chat/completions"),
        "server_trickled_body_1_byte_per_0.2s": dict(hostile="trickle"),
        "server_body_200MB": dict(hostile="huge", huge_bytes=200 << 20),
        "server_caption_of_1.2MB": dict(hostile="choices", choices=[{"index": 0, "message": {"content": "a red car " * 120_000}}]),
        "server_2000_choices_for_n_1": dict(hostile="choices", choices=[{"index": k, "message": {"content": ("a red car " * 3_000) if k == 0 else f"a car {k}"}} for k in range(2000)]),
        "server_zero_choices": dict(hostile="choices", choices=[]),
    }
    rows = []
    try:
        for name, setup in cases.items():
            for key, value in setup.items():
                setattr(stub, key, value)
            os.environ["RECAPTION_BENCH_KEY"] = KEY
            r = run_case(folder / "pairs.jsonl", folder / f"out-{name}", ["--recipe", str(recipe)])
            stats = r["stats"] or {}
            outcome = f"rc {r['rc']}, " + (", ".join(f"{k}: {v}" for k, v in sorted(stats.get("rejects_by_reason", {}).items())) or f"{stats.get('output', 0)} kept")
            kept = [json.loads(line) for f in sorted((folder / f"out-{name}" / "data").glob("*.jsonl")) for line in f.read_text().splitlines()]
            made = [c for rec in kept for c in rec["captions"] if c["source"].startswith("vlm:")]
            if kept:
                outcome += (f" ({len(made)} server captions, longest {max((len(c['text']) for c in made), default=0)} chars; "
                            f"{sum(1 for rec in kept if rec['meta'].get('vlm_candidates_missing'))} flagged missing)")
            leaked = any(h.get("Authorization") for h in elsewhere.headers)
            rows.append((name, outcome, r["seconds"] or 0.0, r["peak_mib"] or 0.0, leaked))
            stub.hostile = None
    finally:
        for s in (server, other):
            s.shutdown()
            s.server_close()
    return rows


def index_cases(folder: Path) -> list[tuple[str, int, float, bool, int]]:
    """Issue 28, defect 8: crafted index files through `index info` and `dedup.against`:
    (case, exit code, seconds, a traceback, lines printed to stderr)."""
    folder.mkdir(parents=True)
    (folder / "good.jpg").write_bytes(encode(noise_image(0)))
    (folder / "pairs.jsonl").write_text(_line(GOOD) + "\n")
    meta = {b"recaption_index": json.dumps({"version": 1, "sources": [{"name": "x"}]}).encode()}
    u64 = pa.array([1], pa.uint64())
    tables = {
        "index_missing_columns": pa.table({"source": pa.array([0], pa.int32()), "id": ["a"]}),
        "index_wrong_types": pa.table({"source": ["zero"], "id": ["a"], "sha": ["x"], "phash": [1.5], "has_phash": [True], "mirror": [1], "has_mirror": [True]}),
        "index_source_out_of_range": pa.table({"source": pa.array([7], pa.int32()), "id": ["a"], "sha": u64, "phash": u64, "has_phash": [True], "mirror": u64, "has_mirror": [True]}),
    }
    rows = []
    for name, table in tables.items():
        path = folder / f"{name}.parquet"
        pq.write_table(table.replace_schema_metadata(meta), path)
        for how, args in (("info", ["index", "info", str(path)]), ("run", ["run", str(folder / "pairs.jsonl"), str(folder / f"out-{name}"), "--recipe", "clean",
                                                                        "--set", f"dedup.against=[{path}]", "--no-progress"])):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "recaption.cli", *args], capture_output=True, text=True, timeout=300)
            rows.append((f"{name} ({how})", proc.returncode, time.perf_counter() - start, "Traceback" in proc.stderr, len(proc.stderr.strip().splitlines())))
    stored = folder / "stored_phash_40_hex"  # a dataset whose records carry a 40-digit phash
    stored.mkdir()
    (stored / "good.jpg").write_bytes(encode(noise_image(0)))
    (stored / "pairs.jsonl").write_text(_line({**GOOD, "scores": {"sha256": "ab" * 32, "phash": "f" * 40}}) + "\n")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "recaption.cli", "index", "build", str(stored), "-o", str(folder / "built.parquet"), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    rows.append(("index_build_stored_phash_40_hex", proc.returncode, time.perf_counter() - start, "Traceback" in proc.stderr, len(proc.stderr.strip().splitlines())))
    return rows


def gzip_bomb_versus(checkout: Path) -> None:
    """The gzip-bomb tar at two sizes, this checkout against another: peak memory grows with
    the members where a batch is cut by count alone, and stays flat where it is cut by bytes."""
    for members in (24, 48):
        with tempfile.TemporaryDirectory() as tmp:
            folder = _gzip_bomb(Path(tmp) / "bomb", members=members, size=60 << 20)
            for label, code in (("other", checkout.resolve()), ("this", None)):
                r = run_case(folder, Path(tmp) / f"out-{label}", checkout=code)
                print(f"gzip bomb, {members} members of 60 MiB, {label} checkout: {r['seconds']:.2f} s, {r['peak_mib']:.0f} MiB peak, rc {r['rc']}", flush=True)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--gzip-bomb-versus":
        gzip_bomb_versus(Path(sys.argv[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "in"
        root.mkdir()
        (root.parent / "outside.jpg").write_bytes(encode(noise_image(9), comment=b"bench-outside-photo"))
        for name in ("good.jpg", "good2.jpg", "good3.jpg", "good4.jpg", "other.jpg"):
            (root / name).write_bytes(encode(noise_image(len(name))))
        os.mkfifo(root / "pipe.jpg")
        (root / "adir").mkdir()
        inputs: dict[str, Path] = {}
        extra: dict[str, list[str]] = {}
        (root / "baseline.jsonl").write_text(_line(GOOD) + "\n")
        for name, line in {**jsonl_cases(), **outside_cases(root)}.items():
            path = root / f"{name}.jsonl"
            with open(path, "w") as fh:
                fh.write(_line(GOOD) + "\n" + line + "\n")
            inputs[name] = path
        inputs.update(tar_cases(root / "tars"))
        for name, (path, args) in issue28_cases(root / "issue28").items():
            inputs[name], extra[name] = path, args
        # The baseline is the median of three runs of the good pair alone (the first run of a
        # session also warms the file cache).
        bases = sorted((run_case(root / "baseline.jsonl", root / f"out-baseline-{k}") for k in range(3)), key=lambda r: r["seconds"])
        base = {"seconds": bases[1]["seconds"], "peak_mib": sorted(b["peak_mib"] for b in bases)[1]}
        rows, worst_s, worst_mib = [], ("", 0.0), ("", 0.0)
        for name, path in inputs.items():
            r = run_case(path, root / f"out-{name}", extra.get(name))
            stats = r["stats"] or {}
            reasons = sorted(stats.get("rejects_by_reason", {}))
            kept_both = not reasons and stats.get("output") == 2
            named = kept_both or (bool(reasons) and not any(k.endswith("/error") for k in reasons))
            if kept_both:
                reasons = ["(kept: a valid record)"]
            stopped = r["rc"] != 0 or not stats.get("output")
            extra_s = (r["seconds"] or 0) - base["seconds"]
            extra_mib = (r["peak_mib"] or 0) - base["peak_mib"]
            worst_s = max(worst_s, (name, extra_s), key=lambda x: x[1])
            worst_mib = max(worst_mib, (name, extra_mib), key=lambda x: x[1])
            balanced = bool(stats) and stats.get("input") == stats.get("output", 0) + stats.get("rejected", 0)
            rows.append((name, ", ".join(reasons), named, r["traceback"], stopped, extra_s, extra_mib, r["leaked"], balanced))
            print(f"{name:<30} {', '.join(reasons):<48} named={named} traceback={r['traceback']} stopped={stopped} leaked={r['leaked']} "
                  f"balanced={balanced} {r['seconds'] or 0:.2f} s ({extra_s:+.2f}) {r['peak_mib'] or 0:.0f} MiB ({extra_mib:+.0f})", flush=True)
        print(f"\ncases: {len(rows)}; handled (a named reject, or kept where valid): {sum(r[2] for r in rows)}; tracebacks: {sum(r[3] for r in rows)}; "
              f"runs stopped by one record: {sum(r[4] for r in rows)}; outputs holding a byte from outside the input: {sum(r[7] for r in rows)}; "
              f"counts balanced: {sum(r[8] for r in rows)}")
        print(f"baseline run (one good pair): {base['seconds']:.2f} s, {base['peak_mib']:.0f} MiB peak")
        print(f"worst extra time for one record: {worst_s[1]:.2f} s ({worst_s[0]}); worst extra peak memory: {worst_mib[1]:.0f} MiB ({worst_mib[0]})")
        print(f"review page, 200 requests at once on 6 pairs: slowest answer {review_burst(Path(tmp) / 'review'):.2f} s")
        print("\nA hostile caption server (each a `recaption run` of two images against it):")
        for name, outcome, seconds, peak, leaked in server_cases(Path(tmp) / "server"):
            print(f"{name:<40} {outcome:<60} {seconds:.2f} s {peak:.0f} MiB key_at_other_host={leaked}", flush=True)
        print("\nCrafted reference indexes:")
        for name, rc, seconds, traceback, lines in index_cases(Path(tmp) / "index"):
            print(f"{name:<44} rc {rc} {seconds:.2f} s traceback={traceback} stderr_lines={lines}", flush=True)


if __name__ == "__main__":
    main()
