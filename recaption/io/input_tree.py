"""Which image files a run may read: the input's own tree.

A record names its image by a path, and a record is data: ``/proc/self/environ``,
``/etc/passwd``, ``../../secret.jpg`` or a symlink that leads out of the input folder would
otherwise be read by the writers, ``--embed-images`` and ``export`` and copied into the
dataset. So every path a reader puts into a Pair is checked here, once, where it enters
(``Reader.pairs``): its real path (symlinks followed) must lie inside one of the tree's roots,
and never under the kernel's own trees. A path outside is a reject ``read/outside_input``
unless the user asked for ``--allow-outside-input``.

The roots: the input's folder (or the input file's folder), ``--image-root`` where given, and,
for a `recaption run` output folder, the roots that run recorded in its ``stats.json``
(``image_roots``): its untouched images still live in its own input's tree.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from recaption.io.run_folder import RunFolder, enclosing_run

# The kernel's views of processes, devices and settings: never an image, whatever a root says.
SYSTEM_TREES = (Path("/proc"), Path("/sys"), Path("/dev"))
OUTSIDE_INPUT = "outside_input"


def real_path(path: str) -> str:
    """``os.path.realpath`` of an image path, its folder's resolved once per process: images
    share a few folders, and resolving every component of every path costs a system call
    each. The file itself is looked at every time: a symlink there is resolved whole."""
    # Not abspath: it folds "link/.." away as text, where the system goes up from the link's
    # target; realpath resolves the folder in the system's order.
    folder, name = os.path.split(os.path.join(os.getcwd(), path))
    if name not in ("", ".", "..") and not os.path.islink(path):
        return os.path.join(_real_folder(folder), name)
    return os.path.realpath(path)


@functools.lru_cache(maxsize=4096)
def _real_folder(folder: str) -> str:
    return os.path.realpath(folder)


def _under(path: str | Path, root: str | Path) -> bool:
    """``path`` is ``root`` or lies below it (both real, absolute; compared as text, which is
    what a path is once resolved: a sibling named ``root-2`` is not below ``root``)."""
    path, root = str(path), str(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class InputTree:
    """The folders an input's image paths may lead into."""

    roots: tuple[Path, ...]
    allow_outside: bool = False

    @classmethod
    def of_input(cls, path: str | os.PathLike[str], image_root: str | None = None, allow_outside: bool = False) -> InputTree:
        """The tree of an input path (a file, a folder, a run folder or its ``data/``)."""
        p = Path(path).resolve()
        roots = [p if p.is_dir() else p.parent]
        if image_root:
            roots.append(Path(image_root).resolve())
        run = enclosing_run(p)
        if run is not None:
            roots.extend(recorded_roots(run))
        return cls(tuple(dict.fromkeys(roots)), allow_outside)

    def refusal(self, path: str) -> str | None:
        """Why the image file ``path`` may not be read, or None where it may."""
        try:
            real = real_path(path)
        except (OSError, ValueError):  # a NUL byte in it: no file can be opened by that name either
            return None
        for system in SYSTEM_TREES:
            if _under(real, system):
                return f"{path[:200]!r} leads into {system}, which holds no images"
        if self.allow_outside or any(_under(real, root) for root in self.roots):
            return None
        where = "" if real == path else f" (it leads to {real[:200]!r})"
        return (f"{path[:200]!r} is outside the input{where}; images are read only from inside "
                f"{', '.join(str(r) for r in self.roots[:3])} (--image-root, or --allow-outside-input to read it anyway)")

    def to_list(self) -> list[str]:
        return [str(r) for r in self.roots]


def recorded_roots(run_folder: RunFolder) -> list[Path]:
    """The image roots a run recorded in its ``stats.json`` (older runs: its input's folder).

    A run folder is data too: a recorded root that is a file system's root or a kernel tree is
    left out, so a crafted ``stats.json`` cannot open the whole machine to a reader.
    """
    try:
        stats = json.loads(run_folder.stats.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(stats, dict):
        return []
    recorded = stats.get("image_roots")
    if not isinstance(recorded, list):
        source = stats.get("input_path")
        recorded = [str(Path(source) if Path(source).is_dir() else Path(source).parent)] if isinstance(source, str) and source and "\0" not in source else []
    roots = []
    for item in recorded:
        if not isinstance(item, str) or not item or "\0" in item:
            continue
        root = Path(item).resolve()
        if root != Path(root.anchor) and not any(_under(root, s) for s in SYSTEM_TREES):
            roots.append(root)
    return roots
