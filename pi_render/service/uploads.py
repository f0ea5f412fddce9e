"""The seed's upload flow as a service: init_new_task gives a folder of the caller's own,
run_task renders what they put there, as them."""

import shutil
import threading
from pathlib import Path
from typing import Any

from pi_render.errors import TaskStateConflict
from pi_render.identity import Caller
from pi_render.manifest.contract import RecordStore
from pi_render.manifest.records import TaskIdGenerator
from pi_render.service.quotas import UPLOAD_FOLDER_BYTES
from pi_render.service.submit import Submitted, Submitter
from pi_render.service.upload_folders import make_upload_folder, uploaded_file
from pi_render.task.record import Priority


class Uploads:
    def __init__(self, records: RecordStore, submitter: Submitter,
                 ids: TaskIdGenerator) -> None:  # fmt: skip
        self.records, self.submitter, self.ids = records, submitter, ids
        self.folder = submitter.uploads_dir
        self._lock = threading.Lock()
        self._running: set[str] = set()

    def init(self, file_name: str, caller: Caller | None = None) -> tuple[str, Path]:
        """A task id and the path to upload its file to, in a folder only the caller may write.

        Raises:
            QuotaExceeded: the caller keeps its quota's worth already.
        """
        self.submitter.admission.quotas().check(caller.uid if caller else None,
                                                UPLOAD_FOLDER_BYTES)  # fmt: skip
        task_id = self.ids.new()
        owner = caller.submitted_by if caller else None
        return task_id, make_upload_folder(self.folder, task_id, owner) / file_name

    def run(self, task_id: str, args: dict[str, Any], priority: Priority,
            caller: Caller | None = None) -> Submitted:  # fmt: skip
        """Render what was uploaded for `task_id`, as the caller, who must be the uploader.

        Raises:
            TaskNotFound, PathNotAllowed (see `uploaded_file`); TaskStateConflict: already run.
        """
        if self.records.find(task_id) is not None:  # its upload folder went with its snapshot
            raise TaskStateConflict(f"task {task_id} was already run")
        source = uploaded_file(self.folder, task_id, caller.submitted_by if caller else None)
        with self._lock:
            if task_id in self._running or self.records.find(task_id) is not None:
                raise TaskStateConflict(f"task {task_id} was already run (or is being run)")
            self._running.add(task_id)  # two run_task calls must not share one snapshot folder
        try:
            request = ("render", {**args, "source": str(source)}, priority, None)
            answer = self.submitter.submit_many([request], task_id=task_id, caller=caller)[0]
        finally:
            with self._lock:
                self._running.discard(task_id)
        shutil.rmtree(self.folder / task_id, ignore_errors=True)  # the snapshot holds its copy
        return answer
