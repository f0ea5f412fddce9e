"""fsync for paths: a file's bytes, a folder's entries after a rename, and folders made so that
they survive a power cut (tests/lazyfs.py is the judge: an entry not fsynced into its folder is
gone after a cut, however long ago it was made)."""

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, mode: int = 0o777) -> None:
    """`mkdir -p` whose new folders are each fsynced into their parent."""
    missing = []
    folder = path
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode)
        except FileExistsError:
            continue  # made meanwhile: whoever made it syncs it
        fsync_path(folder.parent)
