"""Structured logs: the `extra` fields (task_id, worker…) go out as key=value or as JSON."""

import json
import logging
import sys
from datetime import datetime, timezone

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """`2026-01-01T00:00:00Z INFO pi_render.x: message task_id=… worker=…`"""

    _second, _stamp = -1, ""  # the last second formatted: a busy daemon logs many in each

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            when = datetime.fromtimestamp(second, timezone.utc)
            self._second, self._stamp = second, when.strftime("%Y-%m-%dT%H:%M:%SZ")
        stamp = self._stamp
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{stamp} {record.levelname} {record.name}: {record.getMessage()}"
        line = f"{line} {fields}" if fields else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for the journal or a log shipper."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("uvicorn.error").setLevel("WARNING")
    # no line shows the caller's file, line, thread or process: not looking them up saves ~10%
    # of a busy daemon's logging (the logging docs' "Optimization")
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # sqlitedict logs a failed statement as a dozen ERROR lines of its own thread's stack; the
    # failure reaches our code as an exception, which logs it once, with the task it hit
    logging.getLogger("sqlitedict").setLevel("CRITICAL")
