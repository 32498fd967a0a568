"""Files that appear whole or not at all: written to a temporary sibling, renamed into place when
done. A run that dies leaves only temporaries (``.NAME.*.tmp``), which a resumed run removes."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(final: Path, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``final``; rename it into place only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp / mkdtemp make private files (0600 / 0700); the result must have the modes any
    # other tool would give it under the user's umask.
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        os.chmod(tmp, 0o777 & ~current_umask())
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.fchmod(fd, 0o666 & ~current_umask())
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if is_dir and final.exists():
            _remove_tree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            _remove_tree(tmp)
        else:
            tmp.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporaries an interrupted run left behind; return how many."""
    n = 0
    if folder.exists():
        for tmp in folder.rglob(".*.tmp"):
            if tmp.is_dir():
                _remove_tree(tmp)
            else:
                tmp.unlink(missing_ok=True)
            n += 1
    return n
