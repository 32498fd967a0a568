"""Hostile inputs, one record at a time: is each handled with a named reject, does any print a
traceback or stop a run, and what is the worst time and memory one record costs?

Every case is a run of its own (``recaption run --recipe clean`` in a fresh process) on a
JSONL (or tar) holding one good pair and the hostile record. A case is handled when the run
exits 0, keeps the good pair, and either rejects the hostile record with a named
``stage/reason`` (not ``STAGE/error``) or keeps it where it is a valid record (the long texts
that once made the text rules quadratic), printing no traceback. Seconds and peak memory are the run's, next to a
run of the good pair alone, so the difference is what the hostile record cost.

    python -m benchmarks.bench_hostile
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
from pathlib import Path

from recaption.limits import MAX_IMAGE_BYTES, MAX_TEXT_CHARS
from tests.conftest import encode, noise_image
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


def tar_cases(folder: Path) -> dict[str, Path]:
    """name -> a tar shard folder with the good sample and a hostile one."""
    out = {}

    def shard(name: str, members: list[tuple[str, bytes]], compress: bool = False) -> None:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            for member, data in [("good.jpg", encode(noise_image(0))), ("good.txt", b"a colourful pattern"), *members]:
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        (folder / name).mkdir(parents=True)
        (folder / name / "00000.tar").write_bytes(gzip.compress(raw.getvalue(), 1) if compress else raw.getvalue())
        out[name] = folder / name

    image = encode(noise_image(1))
    big = bytes(MAX_IMAGE_BYTES + 1)  # one key, several members over the limit, gzip-compressed
    shard("tar_huge_members", [("h.jpg", big), ("h.jpg", big), ("h.png", big), ("h.webp", big), ("h.txt", b"x")], compress=True)
    shard("tar_deep_json", [("h.jpg", image), ("h.json", b'{"d":' + b"[" * 5000 + b"]" * 5000 + b"}")])
    shard("tar_huge_int", [("h.jpg", image), ("h.json", b'{"n":' + b"9" * 5000 + b"}")])
    shard("tar_absolute_path", [("/etc/h.jpg", image)])
    shard("tar_dotdot", [("../h.jpg", image)])
    return out


def run_case(input_path: Path, output: Path) -> dict:
    """One `recaption run` in a fresh process: exit code, wall seconds, peak MiB, traceback, counts."""
    code = (
        "import json, resource, sys, time\n"
        "from recaption.cli import main\n"
        "t = time.perf_counter()\n"
        f"rc = main(['run', {str(input_path)!r}, {str(output)!r}, '--recipe', 'clean', '--workers', '1', '--no-progress'])\n"
        "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t, 'peak_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {"rc": proc.returncode, "seconds": None, "peak_mib": None}
    result["traceback"] = "Traceback" in proc.stderr
    stats_path = output / "stats.json"
    result["stats"] = json.loads(stats_path.read_text()) if stats_path.exists() else None
    return result


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("good.jpg", "good2.jpg", "good3.jpg", "good4.jpg", "other.jpg"):
            (root / name).write_bytes(encode(noise_image(len(name))))
        os.mkfifo(root / "pipe.jpg")
        (root / "adir").mkdir()
        inputs: dict[str, Path] = {}
        (root / "baseline.jsonl").write_text(_line(GOOD) + "\n")
        for name, line in jsonl_cases().items():
            path = root / f"{name}.jsonl"
            with open(path, "w") as fh:
                fh.write(_line(GOOD) + "\n" + line + "\n")
            inputs[name] = path
        inputs.update(tar_cases(root / "tars"))
        base = run_case(root / "baseline.jsonl", root / "out-baseline")
        rows, worst_s, worst_mib = [], ("", 0.0), ("", 0.0)
        for name, path in inputs.items():
            r = run_case(path, root / f"out-{name}")
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
            rows.append((name, ", ".join(reasons), named, r["traceback"], stopped, extra_s, extra_mib))
            print(f"{name:<28} {', '.join(reasons):<40} named={named} traceback={r['traceback']} stopped={stopped} "
                  f"+{extra_s:.2f} s +{extra_mib:.0f} MiB", flush=True)
        print(f"\ncases: {len(rows)}; handled (a named reject, or kept where valid): {sum(r[2] for r in rows)}; tracebacks: {sum(r[3] for r in rows)}; "
              f"runs stopped by one record: {sum(r[4] for r in rows)}")
        print(f"baseline run (one good pair): {base['seconds']:.2f} s, {base['peak_mib']:.0f} MiB peak")
        print(f"worst extra time for one record: {worst_s[1]:.2f} s ({worst_s[0]}); worst extra peak memory: {worst_mib[1]:.0f} MiB ({worst_mib[0]})")


if __name__ == "__main__":
    main()
