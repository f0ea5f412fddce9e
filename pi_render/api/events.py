"""The daemon's one event stream (`GET /events`, Server-Sent Events): every committed change of
a task and every landed frame, numbered. A client that reconnects with `Last-Event-ID` (or
`?after=N`) gets what it missed from the last 10,000; one that fell further behind gets a
`reset` event and reloads. The dashboard process follows it once and fans it out."""

import asyncio
import json
import re
import threading
from collections import deque
from collections.abc import AsyncIterator
from itertools import islice
from typing import Any

from pi_render.task.record import TaskRecord

KEEP = 10_000
KEEPALIVE_S = 15.0


def event_number(text: str | None) -> int | None:
    """A Last-Event-ID or `after` as a number, or None (anything else is ignored)."""
    return int(text) if text and re.fullmatch(r"[0-9]{1,18}", text) else None


class EventLog:
    def __init__(self, keep: int = KEEP) -> None:
        # (seq, kind, data): JSON only when someone reads it (most changes nobody is watching)
        self._events: deque[tuple[int, str, dict[str, Any]]] = deque(maxlen=keep)
        self._seq = 0
        self._lock = threading.Lock()
        self._listeners: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def publish(self, kind: str, data: dict[str, Any]) -> int:
        with self._lock:
            self._seq += 1
            self._events.append((self._seq, kind, data))
            listeners = list(self._listeners)
            seq = self._seq
        for loop, event in listeners:
            loop.call_soon_threadsafe(event.set)
        return seq

    def on_record(self, record: TaskRecord) -> None:
        """Records listener: what a page needs to redraw a task's row (not its arguments)."""
        detail = record.progress_detail or {}
        self.publish("task", {
            "id": record.id, "type": record.type, "status": record.status.value,
            "progress": record.progress, "frames_done": detail.get("frames_done"),
            "frames_total": detail.get("frames_total"), "eta_s": detail.get("eta_s"),
            "job": record.job, "worker": record.worker, "version": record.version})  # fmt: skip

    def on_frame(self, task_id: str, frame: int) -> None:
        self.publish("frame", {"task_id": task_id, "frame": frame})

    def after(self, seq: int) -> tuple[list[tuple[int, str, str]], bool]:
        """Events after `seq` (as JSON), and whether some between were already dropped."""
        with self._lock:
            if not self._events:
                return [], seq < self._seq
            oldest = self._events[0][0]  # numbers run without gaps: find the place by them
            start = max(0, seq - oldest + 1)
            found = list(islice(self._events, start, None))
        events = [(n, kind, json.dumps({"seq": n, **data})) for n, kind, data in found]
        return events, seq < oldest - 1

    @property
    def last(self) -> int:
        with self._lock:
            return self._seq

    async def stream(self, after: int) -> AsyncIterator[str]:
        """SSE lines from `after` on, until the client goes."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        entry = (loop, wake)
        with self._lock:
            self._listeners.add(entry)
        try:
            seq = after
            while True:
                wake.clear()
                events, lost = self.after(seq)
                if lost:
                    yield f"id: {self.last}\nevent: reset\ndata: {{}}\n\n"
                    seq = self.last
                    continue
                for number, kind, data in events:
                    yield f"id: {number}\nevent: {kind}\ndata: {data}\n\n"
                    seq = number
                if not events:
                    try:
                        await asyncio.wait_for(wake.wait(), KEEPALIVE_S)
                    except TimeoutError:
                        yield ": keepalive\n\n"
        finally:
            with self._lock:
                self._listeners.discard(entry)
