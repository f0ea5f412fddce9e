"""One error root for everything a user can cause; each message says what to do next."""


class PiRenderError(Exception):
    """Raised for any problem a user can cause or fix; the message is meant for a person."""

    http_status = 400
    retryable = True  # may a task that failed with it heal by trying again?

    def details(self) -> dict[str, object]:
        """What the API adds to the error's body beside its message (field errors, a list…)."""
        return {}


class ConfigError(PiRenderError):
    """Raised when the config file or an env override is invalid (names file, key, reason)."""


class DaemonAlreadyRunning(PiRenderError):
    """Raised when another daemon holds the data directory's lock."""


class DaemonUnreachable(PiRenderError):
    """Raised by the client when nothing answers on the socket."""


class UnknownTaskType(PiRenderError):
    """Raised when a request names a task type that is not registered."""

    http_status = 400
    retryable = False


class TaskNotFound(PiRenderError):
    """Raised when a task id is not in the records."""

    http_status = 404


class InvalidTaskArgs(PiRenderError):
    """Raised when a task's arguments fail its pydantic model; carries the field errors."""

    http_status = 422
    retryable = False

    def __init__(self, message: str, errors: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.errors = errors

    def details(self) -> dict[str, object]:
        return {"fields": self.errors}


class TaskStateConflict(PiRenderError):
    """Raised when an action does not fit the task's state (cancelling a finished task)."""

    http_status = 409


class TaskTimedOut(PiRenderError):
    """Raised when a task ran past its maximum runtime (per task, or per type in config)."""


class StorageError(PiRenderError):
    """Raised when a durable store could not write (I/O error): the write was rolled back (or,
    when the store cannot tell, it may be on disk after all: callers treat it as not done)."""

    http_status = 503


class DiskFull(StorageError):
    """Raised when the data disk has too little room left to accept work safely."""

    http_status = 507


class DuplicateOrigin(PiRenderError):
    """Raised when a task with the same origin (a cron slot, a watched file) exists already:
    another host of the farm made it first."""

    http_status = 409


class StaleAttempt(PiRenderError):
    """Raised when a worker writes for an attempt that is no longer the task's own: its lease
    ran out and another host took the task over (fencing)."""

    http_status = 409


class NoConsumer(PiRenderError):
    """Raised when a task is routed to a label that no worker consumes."""

    http_status = 409
