"""LoopWorker: a thread body made of `run_once()` steps until told to stop."""

import logging
import threading
from abc import ABC, abstractmethod

from pi_render.backoff import Backoff
from pi_render.errors import StorageError

log = logging.getLogger(__name__)

STORAGE_BACKOFF = Backoff(0.2, 5.0)  # between tries of a write the disk refused
STORAGE_ERRORS = (StorageError,)  # a full or failing data disk (backends translate theirs)


class LoopWorker(ABC):
    """One unit of work per `run_once`; `run` loops until `stop` is set."""

    name: str

    def __init__(self, name: str) -> None:
        self.name = name
        self.stop_event = threading.Event()

    @abstractmethod
    def run_once(self) -> bool:
        """Do one step; returns whether there was work (False may mean it waited and gave up)."""

    def wake(self) -> None:
        """Interrupt a blocking wait inside `run_once` (after setting `stop_event`)."""

    def run(self) -> None:
        """Steps until stopped; a full or failing disk pauses the loop (with backoff) instead of
        killing the thread: the step is tried again once the disk takes writes."""
        tries = STORAGE_BACKOFF.counter()
        while not self.stop_event.is_set():
            try:
                self.run_once()
            except STORAGE_ERRORS as exc:
                wait = tries.failed()
                log.error("the data disk refuses a write; trying again in %.1fs: %s", wait, exc,
                          extra={"worker": self.name})  # fmt: skip
                self.stop_event.wait(wait)
            else:
                tries.succeeded()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake()
