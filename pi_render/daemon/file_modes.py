"""The data dir keeps what it holds to the daemon, whatever the umask it was started under:
records, queues, snapshots, logs and the audit log are the daemon's alone; others may only pass
through it to the output folders the daemon made for them (`output/<task id>`)."""

import logging
import os
from pathlib import Path

from pi_render.data_dir import DataDir
from pi_render.fsync import make_dirs

log = logging.getLogger(__name__)

PRIVATE_DIRS = ("queues", "spool", "logs", "store")


def make_private(data_dir: Path) -> None:
    """Folders 0700 (the data dir itself 0711: searchable, never listed) and files 0600."""
    data_dir.chmod(0o711)
    for name in PRIVATE_DIRS:
        folder = data_dir / name
        make_dirs(folder)
        folder.chmod(0o700)
    paths = DataDir(data_dir)
    uploads = paths.uploads  # each upload's folder is its uploader's: pass, never list
    make_dirs(uploads)
    uploads.chmod(0o711)
    output = paths.output  # the default outputs' parent: the daemon's; output/<id> theirs
    make_dirs(output)
    if output.stat().st_uid != os.getuid():  # given to a submitter by an older version
        os.chown(output, os.getuid(), os.getgid())
    output.chmod(0o711)
    for folder in (data_dir, paths.queues):
        for path in folder.iterdir():
            if path.is_file() and not path.is_symlink():
                path.chmod(0o600)
