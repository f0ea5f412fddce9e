"""LoopWorker: a thread body made of `run_once()` steps until told to stop."""

import threading
from abc import ABC, abstractmethod


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
        while not self.stop_event.is_set():
            self.run_once()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake()
