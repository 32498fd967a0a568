"""The ``recaption`` command line.

Each command is a function that returns its exit code; what goes wrong raises a
``RecaptionError`` (errors.py), printed once by ``main`` as ``recaption: MESSAGE`` with the
error's exit code (2 for usage, 130 for an interruption, 1 otherwise). A command catches an
exception of the system's or a library's only where it can say what to do about it (a full
disk, a port taken, a setting the dataset cannot honour), and raises it again as one of ours.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import webbrowser
from dataclasses import replace
from pathlib import Path

from recaption import __version__
from recaption.bench.realign import RealignSettings, run_realign
from recaption.dedup.index import ReferenceIndex, index_source, read_index
from recaption.demo import build_demo
from recaption.errors import Interrupted, RecaptionError, UsageError
from recaption.eval.evaluate import EvalSettings
from recaption.eval.run import run_eval
from recaption.io import OUTPUT_FORMATS, READERS, default_output_format, open_reader, open_writer, read_kept_pairs
from recaption.io.base import ReaderOptions
from recaption.io.run_folder import RunFolder
from recaption.loaders.exports import FORMATS, export
from recaption.loaders.policy import CaptionPolicy
from recaption.recipe import load_recipe, shipped_recipes
from recaption.review import labelstudio
from recaption.review.export import export_round
from recaption.review.labelstudio_api import LabelStudioClient
from recaption.review.sample import SampleSettings, write_sample
from recaption.review.server import ReviewServer
from recaption.review.session import ReviewSession
from recaption.runners.driver import Executor, RunDriver, why_nothing_kept
from recaption.runners.local import LocalExecutor, default_workers
from recaption.runners.ray_data import RayExecutor
from recaption.runners.shards import RunConfig
from recaption.train.config import load_train_config
from recaption.train.loop import train_captioner

ALLOW_OUTSIDE_HELP = ("read image paths that lead outside the input's folder (absolute paths, '..', symlinks out); "
                      "without it they are rejects 'outside_input', so a record cannot copy any file of this machine into the output")


FIELD_HELP = {
    "text": "field holding the text(s), e.g. caption",
    "id": "field holding the image id, e.g. key",
    "image": "field holding the image path or bytes",
}


def _add_input_options(p: argparse.ArgumentParser, fields: tuple[str, ...] = ()) -> None:
    """The options that say how to read INPUT, the same for every command that reads a dataset:
    its format, where its images live, whether they may lead outside it, and (``fields``) which
    of its record's fields hold the text, the id and the image."""
    p.add_argument("--format", dest="input_format", choices=sorted(READERS), help="input format (default: detected from the path)")
    p.add_argument("--image-root", help="folder that image paths are relative to (default: the input file's folder)")
    p.add_argument("--allow-outside-input", action="store_true", help=ALLOW_OUTSIDE_HELP)
    for name in fields:
        p.add_argument(f"--{name}-field", help=FIELD_HELP[name])


def _reader_options(args: argparse.Namespace, **more: object) -> ReaderOptions:
    """``ReaderOptions`` from the options ``_add_input_options`` added (and ``more``)."""
    fields = {f"{name}_field": getattr(args, f"{name}_field", None) for name in FIELD_HELP}  # a command may offer none
    return ReaderOptions(image_root=args.image_root, allow_outside_input=args.allow_outside_input, **fields, **more)  # type: ignore[arg-type]


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a recipe over a dataset (the main job)", description="Run a recipe over INPUT and write OUTPUT/.")
    p.add_argument("input", help="a JSONL file, a Parquet file or folder, a folder of .tar shards, an image folder, or img2dataset output")
    p.add_argument("output", help="the output folder (re-run the same command to resume)")
    p.add_argument("--recipe", default="default", help="a shipped recipe's name or a YAML path (default: default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.ARG=VALUE", help="override a recipe argument (repeatable)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: the CPU cores); with --runner ray and no --address, the CPUs of the local Ray")
    p.add_argument("--runner", choices=["local", "ray"], default="local", help="local: processes on this machine (default); ray: Ray Data, on a local Ray or the cluster at --address")
    p.add_argument("--address", help="with --runner ray: the cluster to join (auto, or ray://HOST:10001); default: start a local Ray")
    _add_input_options(p, fields=("text", "id", "image"))
    p.add_argument("--output-format", choices=sorted(OUTPUT_FORMATS), help="output format (default: the input's)")
    p.add_argument("--embed-images", action="store_true", help="Parquet output: store every image's bytes, not the paths of images the run left untouched (a dataset that travels on its own)")
    p.add_argument("--shard-size", type=int, default=1000, help="records per shard where the input has no shards of its own")
    p.add_argument("--overwrite", action="store_true", help="delete an earlier run in OUTPUT and start afresh")
    p.add_argument("--keep-work", action="store_true", help="keep the intermediate files in OUTPUT/_work")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (summary only)")
    p.add_argument("--stop-after-failures", type=int, default=None, metavar="N",
                   help="stop when a stage fails on its first N records with the same error (default 8; 0: reject them and go on)")
    p.set_defaults(handler=cmd_run)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build the demo dataset from scikit-image's photos")
    p.add_argument("folder", help="where to write the demo dataset (pairs.jsonl + images/)")
    p.set_defaults(handler=cmd_demo)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (the alt-text re-aligning captioner)")
    what = p.add_subparsers(dest="what", required=True)
    c = what.add_parser("captioner", help="train the Altogether captioner from a YAML config", description="Train (or resume training) the captioner described by CONFIG.")
    c.add_argument("config", help="a training config (YAML): name, data, kind, model, steps, ...")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config value (model.KEY for the model; repeatable)")
    c.add_argument("--overwrite", action="store_true", help="delete an earlier run in the output folder and start afresh")
    c.add_argument("--no-progress", action="store_true", help="no progress bars")
    c.set_defaults(handler=cmd_train)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks that prove a method (offline, CPU)")
    what = p.add_subparsers(dest="what", required=True)
    r = what.add_parser(
        "realign", help="reproduce the Altogether paper's Table 1 in a synthetic world",
        description="Build a synthetic world of shapes and alt-texts, train a CLIP and the re-aligning captioner on it, and write OUTPUT/table.md and table.json.",
    )
    r.add_argument("output", help="the output folder (world, models, captioner, table)")
    r.add_argument("--train", type=int, default=2000, help="training images (default 2000)")
    r.add_argument("--test", type=int, default=200, help="held-out test images (default 200)")
    r.add_argument("--clip-steps", type=int, default=800, help="steps of the world's CLIP (default 800)")
    r.add_argument("--steps", type=int, default=1500, help="captioner training steps (default 1500)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2): the same seed and threads give the same table")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.set_defaults(handler=cmd_bench)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="compare every caption source of a dataset (the paper's Table 1)",
        description="Evaluate every caption source stored on the pairs of INPUT (alt-text, rules, each VLM, each captioner round, human) "
        "and write OUTPUT/eval.json, eval.csv, eval.md and eval.html.",
    )
    p.add_argument("input", help="a dataset with captions: a `recaption run` output folder, or any input `recaption run` reads")
    p.add_argument("output", help="the folder for eval.json, eval.csv, eval.md, eval.html")
    p.add_argument("--clip", help="a CLIP-like checkpoint (hub id or folder) for CLIPScore, RefCLIPScore, the hallucination proxy and retrieval")
    p.add_argument("--references", help="a caption source (e.g. human) or a record field (default: 'references', else the 'human' source)")
    p.add_argument("--sources", nargs="+", help="the sources to show (default: all; alt-text is always shown)")
    p.add_argument("--fluency-model", help="a causal LM for perplexity (default: pocketsphinx's English trigram model)")
    p.add_argument("--no-names", action="store_true", help="leave people's names (spaCy) out of the sensitive rate")
    p.add_argument("--hallucination-threshold", type=float, default=20.0, help="with --clip: a noun phrase scoring under this (100 * cos) counts as unlike the image")
    _add_input_options(p, fields=("text",))
    p.add_argument("--device", default="auto", help="device for the models (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="do not report each metric family as it runs")
    p.set_defaults(handler=cmd_eval)


def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="human review: choose the pairs to audit")
    what = p.add_subparsers(dest="what", required=True)
    s = what.add_parser(
        "sample", help="a seeded sample of pairs for people to review",
        description="Sample INPUT for review (uniform or stratified by a score; the lowest-scoring and most-disagreeing pairs "
        "always in) and write it to OUTPUT in the input's format, with OUTPUT/sample.json.",
    )
    s.add_argument("input", help="a `recaption run` output folder, or any input `recaption run` reads")
    s.add_argument("output", help="the folder for the sample")
    s.add_argument("--rate", type=float, default=0.05, help="share of the pairs (of each band, when stratified) to draw (default 0.05)")
    s.add_argument("--mode", choices=("uniform", "stratified"), default="uniform")
    s.add_argument("--by", default="clip_score", help="the score bands are cut by (a pair score, else the selected caption's; default clip_score)")
    s.add_argument("--bands", type=int, default=5, help="equal-count score bands when stratified (default 5)")
    s.add_argument("--lowest", type=int, default=0, help="always include the N lowest-scoring pairs")
    s.add_argument("--disagreeing", type=int, default=0, help="always include the N pairs whose caption sources disagree most")
    s.add_argument("--seed", type=int, default=0)
    _add_input_options(s)
    s.set_defaults(handler=cmd_audit)


REVIEW_COMMANDS = ("serve", "export", "labelstudio")


def _add_review(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "review", help="review captions in a local web page, or in Label Studio; write the decisions back",
        description="`recaption review DATASET` (short for `review serve DATASET`) serves the review page; "
        "`review export` writes a round's decisions onto the pairs; `review labelstudio` exports, pushes and imports Label Studio tasks.",
    )
    what = p.add_subparsers(dest="review_command", required=True)
    s = what.add_parser(
        "serve", help="the review page for DATASET, on this machine",
        description="Serve a review page for DATASET (a sample from `recaption audit sample`, or any dataset) on this machine. "
        "Decisions are saved at once in DATASET/review.sqlite; `recaption review export DATASET OUTPUT` writes them back onto the pairs.",
    )
    s.add_argument("dataset", help="the dataset to review")
    s.add_argument("--reviewer", default=os.environ.get("USER") or "reviewer", help="your name, stored with each decision (default: $USER)")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--round", type=int, default=None, help="the annotation round (default: one more than the human captions already there)")
    s.add_argument("--store", help="where decisions are kept (default: DATASET/review.sqlite)")
    s.add_argument("--image-root", help="the folder images may be served from (default: the one the sample recorded, else the dataset's)")
    s.add_argument("--cross-check", action="store_true", help="give each reviewer only pairs another reviewer did in the previous round")
    s.add_argument("--no-browser", action="store_true", help="do not open a browser")
    s.set_defaults(handler=cmd_review)
    e = what.add_parser("export", help="write a review round's decisions onto the pairs")
    e.add_argument("dataset", help="the reviewed dataset")
    e.add_argument("output", help="the folder for the pairs with their human captions (rejected ones in OUTPUT/rejects)")
    e.add_argument("--round", type=int, default=None, help="the round to export (default: the one under review)")
    e.add_argument("--store", help="where the decisions are (default: DATASET/review.sqlite)")
    e.add_argument("--finetune", help="also write the round as {image, alt_text, caption} lines for `recaption train captioner` (kind: finetune)")
    e.set_defaults(handler=cmd_review_export)
    ls = what.add_parser("labelstudio", help="review in Label Studio: export tasks, push them to a server, import the annotations")
    ls_what = ls.add_subparsers(dest="labelstudio_command", required=True)
    lx = ls_what.add_parser("export", help="write a dataset as Label Studio tasks, with its images and the settings")
    lx.add_argument("dataset")
    lx.add_argument("output", help="the folder for tasks.json, config.xml, images/ and a README with the Label Studio settings")
    lx.add_argument("--document-root", help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, a folder OUTPUT is inside (default: OUTPUT)")
    lx.add_argument("--image-prefix", default="/data/local-files/?d=", help="what goes before each image's path below the document root (default: Label Studio's local files)")
    lx.add_argument("--image-root", help="the folder images may be copied from (default: the dataset's; a run's input folder needs this)")
    lx.add_argument("--round", type=int, default=None)
    lx.set_defaults(handler=cmd_labelstudio_export)
    lp = ls_what.add_parser("push", help="create a Label Studio project from an export")
    lp.add_argument("export", help="the folder `recaption review labelstudio export` wrote")
    lp.add_argument("--url", required=True, help="Label Studio's address, e.g. http://localhost:8080")
    lp.add_argument("--token", help="a Label Studio personal access token (default: $LABEL_STUDIO_API_KEY)")
    lp.add_argument("--title", default="recaption review", help="the project's title")
    lp.set_defaults(handler=cmd_labelstudio_push)
    li = ls_what.add_parser("import", help="read Label Studio's annotations into the review store")
    li.add_argument("dataset", help="the dataset the tasks were made from")
    li.add_argument("export", nargs="?", help="Label Studio's JSON export of the annotated tasks (or --url and --project)")
    li.add_argument("--url", help="read the annotations from this Label Studio (with --project), or only the annotators' e-mails (with EXPORT)")
    li.add_argument("--project", type=int, help="the Label Studio project id (with --url)")
    li.add_argument("--token", help="a Label Studio personal access token (default: $LABEL_STUDIO_API_KEY)")
    li.add_argument("--round", type=int, default=None)
    li.add_argument("--store", help="the review store (default: DATASET/review.sqlite)")
    li.set_defaults(handler=cmd_labelstudio_import)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a dataset in a training framework's layout (open_clip, LLaVA, diffusers, Hugging Face)",
        description="Write INPUT's pairs to OUTPUT in the layout open_clip, LLaVA, diffusers or Hugging Face datasets read, "
        "each caption chosen by the caption policy.",
    )
    p.add_argument("input", help="a `recaption run` output folder, or any input `recaption run` reads")
    p.add_argument("output", help="a new folder")
    p.add_argument("--to", required=True, choices=FORMATS)
    p.add_argument("--policy", choices=("selected", "original", "mix"), default="selected", help="which caption (default: the selected recaption)")
    p.add_argument("--p", type=float, default=1.0, help="with --policy mix: the share of selected captions (e.g. 0.15 for CLIP)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=10_000, help="samples per tar or Parquet file (default 10000)")
    _add_input_options(p)
    p.set_defaults(handler=cmd_export)


def _new_folder(output: Path) -> Path:
    """Commands that write a new folder never write over an earlier one."""
    if output.exists() and any(output.iterdir()):
        raise UsageError(f"{output} is not empty; give a new folder")
    return output


def _summary(stats: dict, output: Path, seconds: float) -> str:
    lines = [
        "",
        f"recaption: {stats['input']} pairs read, {stats['output']} kept, {stats['rejected']} rejected ({seconds:.1f} s wall)",
    ]
    if stats["rejects_by_reason"]:
        lines.append("  rejected because:")
        reasons = sorted(stats["rejects_by_reason"].items(), key=lambda kv: -kv[1])
        for key, n in reasons[:12]:
            lines.append(f"    {n:>8}  {key}")
        if len(reasons) > 12:
            rest = reasons[12:]
            lines.append(f"    {sum(n for _, n in rest):>8}  in {len(rest)} more reason{'s' if len(rest) > 1 else ''} (all in stats.json and report.html)")
    timed = sorted(((name, c) for name, c in stats.get("stages", {}).items() if c.get("seconds", 0) > 0), key=lambda nc: -nc[1]["seconds"])
    if timed:
        # Where the time went, with each stage's own rate per worker: the taggers dominate.
        lines.append("  slowest stages: " + ", ".join(f"{name} {c['seconds']:.1f} s ({c['seen'] / c['seconds']:.1f} pairs/s)" for name, c in timed[:3]))
    lines += [
        f"  kept pairs:  {output / 'data'}/ ({stats['output_format']})",
        f"  rejects:     {output / 'rejects'}/",
        f"  stats:       {output / 'stats.json'}",
        f"  report:      {output / 'report.html'}",
    ]
    lines += [f"  note: {note}" for note in stats.get("output_notes", [])]
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    output = Path(args.output)
    folder = RunFolder(output)
    if args.overwrite:
        folder.refuse_overwrite_of_other_data()
    if args.stop_after_failures is not None:
        if args.stop_after_failures < 0:
            raise UsageError("--stop-after-failures must be 0 or more")
        recipe.stop_after_failures = args.stop_after_failures
    if args.shard_size < 1:
        raise UsageError("--shard-size must be at least 1")
    if args.address and args.runner != "ray":
        raise UsageError("--address is for --runner ray")
    config = RunConfig(
        input=args.input,
        output=str(output),
        recipe=recipe,
        input_format=args.input_format,
        output_format=args.output_format,
        # the root resolved: a resumed run reads it from its settings, from whatever folder
        reader=replace(_reader_options(args, shard_size=args.shard_size), image_root=str(Path(args.image_root).resolve()) if args.image_root else None),
        workers=args.workers or default_workers(),
        keep_work=args.keep_work,
        embed_images=args.embed_images,
    )
    if args.runner == "ray":

        executor: Executor = RayExecutor(args.address)
    else:
        executor = LocalExecutor(config.workers)
    driver = RunDriver(config, executor, show_progress=not args.no_progress)
    if args.embed_images:  # checked before --overwrite deletes anything
        open_writer(args.output_format or default_output_format(open_reader(args.input, args.input_format, config.reader)), output, embed_images=True)
    start = time.perf_counter()
    try:
        with folder.locked():
            if args.overwrite:  # everything but the lock this run now holds
                folder.clear()
            stats = driver.run()
    except OSError as exc:  # the output as a whole: disk full, read-only, gone
        where = f" ({exc.filename})" if exc.filename else ""
        raise RecaptionError(f"stopped: {exc.strerror or exc}{where}. Finished shards are kept; fix that and run the same command again to resume.") from None
    print(_summary(stats, output, time.perf_counter() - start))
    if stats["output"] == 0:
        raise RecaptionError(why_nothing_kept(stats))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        manifest = build_demo(Path(args.folder))
    except ImportError as exc:
        raise RecaptionError(f"the demo needs scikit-image's photos: pip install scikit-image ({exc})") from None
    print(f"demo dataset written: {manifest}")
    return 0


def cmd_recipes(_: argparse.Namespace) -> int:
    for name in shipped_recipes():
        recipe = load_recipe(name)
        print(f"{name}: {' > '.join(s.name for s in recipe.stages)}")
        if recipe.description:
            print(f"    {recipe.description.strip()}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    config = load_train_config(args.config, args.overrides)
    try:
        model = train_captioner(config, progress=not args.no_progress, overwrite=args.overwrite)
    except OSError as exc:
        raise RecaptionError(str(exc)) from None
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; run the same command to resume from the last checkpoint in {config.output}/checkpoints") from None
    print(f"recaption: captioner saved in {model} (use it with altogether_caption.checkpoint={model})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    output = _new_folder(Path(args.output))
    if args.threads < 1:
        raise UsageError("--threads must be at least 1")
    settings = RealignSettings(args.train, args.test, args.clip_steps, args.steps, seed=args.seed, progress=not args.no_progress, threads=args.threads)
    result = run_realign(output, settings)
    print((output / "table.md").read_text())
    print(f"recaption: table in {output / 'table.md'} and {output / 'table.json'} ({result['seconds']:.0f} s)")
    return 0 if all(result["checks"].values()) else 1


def cmd_eval(args: argparse.Namespace) -> int:
    settings = EvalSettings(
        clip=args.clip, references=args.references, sources=args.sources, fluency_model=args.fluency_model,
        names=not args.no_names, device=args.device, hallucination_threshold=args.hallucination_threshold, progress=not args.no_progress,
    )
    options = _reader_options(args)
    _, summary = run_eval(Path(args.input), Path(args.output), settings, args.input_format, options)
    print(summary)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    output = _new_folder(Path(args.output))
    settings = SampleSettings(args.rate, args.mode, args.by, args.bands, args.lowest, args.disagreeing, args.seed)
    try:
        settings.check()
        summary = write_sample(args.input, args.output, settings, args.input_format,
                               _reader_options(args))
    except ValueError as exc:  # settings the dataset cannot honour (a score it does not have)
        raise UsageError(str(exc)) from None
    reasons = ", ".join(f"{n} {reason}" for reason, n in summary["by_reason"].items())
    print(f"recaption: {summary['sampled']} of {summary['pairs']} pairs sampled ({reasons}) into {output}; details in {output / 'sample.json'}")
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    try:
        session = ReviewSession.open(args.dataset, args.store, args.round, args.image_root, args.cross_check)
        server = ReviewServer(session, args.reviewer, args.host, args.port)
    except OSError as exc:  # the store cannot be written, the port is taken, the address is not this machine's
        raise UsageError(f"cannot start the review page: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}") from None
    state = session.state(args.reviewer)
    for root in session.refused_roots:
        print(f"recaption: images under {root} (recorded in the dataset) are not served: it is outside the dataset's folder; "
              f"pass --image-root {root} if you trust it", file=sys.stderr)
    print(f"recaption: reviewing {state['total']} pairs (round {session.round}, {state['decided']} decided by {args.reviewer}) at {server.url}")
    print(f"  decisions are saved at once in {session.store.path}; stop with Ctrl+C, then: recaption review export {args.dataset} OUTPUT")
    # Only where there is a desktop: on a server, webbrowser may start a text browser in this terminal.
    if not args.no_browser and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform in ("darwin", "win32")):
        webbrowser.open(server.url)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        print("\nrecaption: review server stopped; nothing is lost")
    finally:
        server.stop()
    return 0


def cmd_review_export(args: argparse.Namespace) -> int:
    output = _new_folder(Path(args.output))
    session = ReviewSession.open(args.dataset, args.store, args.round)
    try:
        summary = export_round(session, output, Path(args.finetune) if args.finetune else None)
    finally:
        session.store.close()
    print(f"recaption: round {summary['round']}: {summary['decisions']} decisions on {summary['pairs_decided']} of {summary['pairs']} pairs; "
          f"{summary['kept']} pairs written to {output}, {summary['rejected']} to {output / 'rejects'}; summary in {output / 'review.json'}")
    if summary["conflicts"]:
        print(f"recaption: {len(summary['conflicts'])} pair(s) with reviewers who disagree, resolved by the rule: {summary['conflict_rule']}; "
              f"listed in {output / 'review.html'}")
        for c in summary["conflicts"][:5]:
            who = "; ".join(f"{d['reviewer']} {d['action']}" for d in c["decisions"])
            print(f"  {c['image_id']}: {who} -> {c['resolved']}")
    return 0


def cmd_labelstudio_export(args: argparse.Namespace) -> int:
    session = ReviewSession.open(args.dataset, None, args.round, image_root=args.image_root)
    try:
        done = labelstudio.export_tasks(session, Path(args.output), args.image_prefix, Path(args.document_root) if args.document_root else None)
    finally:
        session.store.close()
    missing = ""
    if done["missing_images"]:
        missing = f"; {len(done['missing_images'])} pairs have no readable image (their tasks show none): {done['missing_images'][:5]}"
        if session.refused_roots:
            missing += f" (images under {', '.join(map(str, session.refused_roots))} are outside the dataset's folder: add --image-root to copy them)"
    print(f"recaption: {done['tasks']} Label Studio tasks in {Path(args.output) / 'tasks.json'} with their images in {done['images']}{missing}. "
          f"Settings and next steps: {Path(args.output) / 'README.md'}")
    return 0


def cmd_labelstudio_push(args: argparse.Namespace) -> int:
    done = labelstudio.push(Path(args.export), LabelStudioClient(args.url, args.token), args.title)
    print(f"recaption: project {done['project']} with {done['tasks']} tasks: {done['url']}. When the reviewers are done: "
          f"recaption review labelstudio import DATASET --url {args.url} --project {done['project']}")
    return 0


def cmd_labelstudio_import(args: argparse.Namespace) -> int:
    if not args.export and not (args.url and args.project is not None):
        raise UsageError("give Label Studio's JSON export file, or --url and --project to read it from the server")
    users: dict[int, str] = {}
    if args.url:
        client = LabelStudioClient(args.url, args.token)
        if args.export:
            tasks, users = labelstudio.read_export(Path(args.export)), client.users()
        else:
            tasks, users = labelstudio.fetch_annotations(client, args.project)
    else:
        tasks = labelstudio.read_export(Path(args.export))
    source = args.export or f"project {args.project} at {args.url}"
    session = ReviewSession.open(args.dataset, args.store, args.round)
    try:
        counts = labelstudio.import_annotations(session, tasks, users)
    except ValueError as exc:  # a decision the store refuses: the import is all or nothing
        raise UsageError(f"{source}: nothing imported: {exc}") from None
    finally:
        session.store.close()
    print(f"recaption: {counts['decisions']} decisions imported into {session.store.path} (round {session.round}); "
          f"{counts['already_imported']} already there, {counts['skipped']} skipped or cancelled, {counts['unknown_pairs']} tasks of other pairs, "
          f"{counts['malformed']} malformed{' (' + str(counts['first_malformed']) + ')' if counts['malformed'] else ''}. "
          f"Next: recaption review export {args.dataset} OUTPUT")
    if counts["reviewers_by_id"]:
        print("recaption: the export names reviewers by Label Studio user id; add --url (and --token) to record their e-mails", file=sys.stderr)
    if not counts["decisions"] and not counts["already_imported"]:
        raise RecaptionError(f"{source} holds no decision on this dataset's pairs: is it a JSON or JSON_MIN export "
                             "of the tasks `recaption review labelstudio export` wrote?")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    output = _new_folder(Path(args.output))
    try:
        policy = CaptionPolicy(args.policy, args.p, args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    refused: list = []  # paths that lead outside the input: listed as skipped, never read
    options = _reader_options(args)
    pairs, rejected = read_kept_pairs(args.input, args.input_format, options, refused)
    rejected -= len(refused)
    done = export(pairs, output, args.to, policy, args.shard_size, refused)
    note = f", {done['skipped']} without a readable image (or outside the input) listed in {output / 'skipped.jsonl'}" if done["skipped"] else ""
    left = f"; {rejected} records the input had rejected are not exported" if rejected else ""
    print(f"recaption: {done['written']} pairs written to {output} for {args.to} (captions: {args.policy}){note}{left}")
    return 0


def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="reference indexes: what earlier runs kept, or evaluation images, for dedup to check against")
    what = p.add_subparsers(dest="what", required=True)
    b = what.add_parser(
        "build", help="index the images of run outputs, datasets or image folders",
        description="Write INDEX (one Parquet file) with the image hashes of every SOURCE: a `recaption run` output folder "
        "(its stored hashes are read), or any input `recaption run` reads (images are decoded and hashed). "
        "Name INDEX in a recipe's dedup.against (pairs kept before) or dedup.eval_sets (evaluation images).",
    )
    b.add_argument("sources", nargs="+", metavar="SOURCE", help="run output folders, datasets, image folders or other indexes")
    b.add_argument("-o", "--output", required=True, metavar="INDEX", help="the index file to write (.parquet)")
    b.add_argument("--name", action="append", default=[], help="a name for each SOURCE, in order, as rejects will name it (default: its folder name)")
    b.add_argument("--kind", choices=("kept", "eval"), default="kept", help="what the sources are: pairs kept by earlier runs, or evaluation images (default kept)")
    _add_input_options(b)
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(handler=cmd_index_build)
    i = what.add_parser("info", help="what an index holds")
    i.add_argument("index", help="an index file")
    i.set_defaults(handler=cmd_index_info)


def cmd_index_build(args: argparse.Namespace) -> int:
    if args.name and len(args.name) != len(args.sources):
        raise UsageError(f"--name is given {len(args.name)} time(s) for {len(args.sources)} source(s); give one per SOURCE or none")
    if not args.output.endswith(".parquet"):
        raise UsageError(f"INDEX is a .parquet file, not {args.output!r}")
    options = _reader_options(args)
    names = args.name or [None] * len(args.sources)
    parts = [index_source(src, name, args.kind, args.input_format, options, not args.no_progress) for src, name in zip(args.sources, names)]
    index = ReferenceIndex.concat(parts)
    if not len(index):
        raise RecaptionError("nothing to index: no source holds a readable image; see the counts above")
    index.save(args.output)
    for s in index.sources:
        skipped = sum(s["skipped"].values()) if "skipped" in s else 0
        why = f" ({', '.join(f'{k}: {v}' for k, v in sorted(s['skipped'].items()))})" if skipped else ""
        print(f"  {s['name']}: {s['records']} images indexed, {skipped} skipped{why}")
    print(f"recaption: {len(index)} images indexed in {args.output}")
    return 0


def cmd_index_info(args: argparse.Namespace) -> int:
    index = read_index(args.index)  # a ReferenceIndexError says what is wrong with it
    print(f"{args.index}: {len(index)} images, {int(index.has_phash.sum())} with a perceptual hash")
    for s in index.sources:
        print(f"  {s['name']} ({s['kind']}): {s['records']} images from {s['path']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recaption", description="Turn raw image-text pairs into model-ready training data.")
    parser.add_argument("--version", action="version", version=f"recaption {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_demo(sub)
    _add_train(sub)
    _add_bench(sub)
    _add_eval(sub)
    _add_audit(sub)
    _add_review(sub)
    _add_export(sub)
    _add_index(sub)
    sub.add_parser("recipes", help="list the shipped recipes").set_defaults(handler=cmd_recipes)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `recaption review DATASET` is short for `recaption review serve DATASET`.
    if argv[:1] == ["review"] and len(argv) > 1 and argv[1] not in REVIEW_COMMANDS and not argv[1].startswith("-"):
        argv.insert(1, "serve")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except RecaptionError as exc:
        print(f"recaption: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\nrecaption: interrupted", file=sys.stderr)
        return Interrupted.exit_code


if __name__ == "__main__":
    sys.exit(main())
