"""The seed's upload flow: each upload gets a folder of its uploader's own (`uploads/<id>/`,
0700, theirs), and only they may have it rendered, only when it holds one regular file."""

import os
import re
import stat
from pathlib import Path

from pi_render.errors import TaskNotFound
from pi_render.paths import PathNotAllowed

TASK_ID = re.compile(r"[0-9a-f]{20}")  # what TaskIdGenerator makes


def make_upload_folder(uploads_dir: Path, task_id: str, caller: dict[str, int] | None) -> Path:
    """A folder only `caller` may write; the data dir's uploads folder may be passed, not read."""
    uploads_dir.mkdir(mode=0o711, exist_ok=True)
    folder = uploads_dir / task_id
    folder.mkdir(mode=0o700)
    if caller is not None and os.geteuid() == 0:
        os.chown(folder, caller["uid"], caller["gid"])
    return folder


def uploaded_file(uploads_dir: Path, task_id: str, caller: dict[str, int] | None) -> Path:
    """The file uploaded for `task_id`, if it is the caller's (root may run any) and a regular
    file (`lstat`: no link).

    Raises:
        TaskNotFound: no such upload; PathNotAllowed: not theirs, or not a regular file.
    """
    if not TASK_ID.fullmatch(task_id):
        raise TaskNotFound(f"no upload for task {task_id!r}: not a task id")
    folder = uploads_dir / task_id
    try:
        info = folder.lstat()
        uploads = sorted(folder.iterdir())
    except OSError:
        uploads = []
    if not uploads:
        raise TaskNotFound(f"no upload for task {task_id}: call init_new_task, then write "
                           f"the file to the path it returned")  # fmt: skip
    uid = (caller or {}).get("uid", 0)
    if not stat.S_ISDIR(info.st_mode) or uid not in (0, info.st_uid):
        raise PathNotAllowed(f"the upload for task {task_id} is not uid {uid}'s")
    if not stat.S_ISREG(uploads[0].lstat().st_mode):
        raise PathNotAllowed(f"the upload {uploads[0]} is not a regular file (a link?)")
    return uploads[0]
