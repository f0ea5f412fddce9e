"""`POST /tasks` on a short path: a well-formed submit from a peer allowed to make it skips
FastAPI's middleware, routing and thread-pool layers, which cost more CPU than the submit itself
(the daemon is bound by one core under the GIL when clients submit one task per request).

Only the plain, successful shape is taken here; anything else (no peer credentials, a role that
may not submit, a body that is not a JSON object with a declared length under the limit, a body
that fails validation) is handed, unread or replayed byte for byte, to the full app, whose answer
is the reference. What is taken gets the same answer and the same audit line the full app gives.
"""

import asyncio
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from pydantic import ValidationError

from pi_render.api.access import RANK, AccessPolicy, AuditLog
from pi_render.api.app import SubmitRequest, error_answer
from pi_render.errors import PiRenderError
from pi_render.identity import Caller
from pi_render.service import TaskService

SUBMIT_THREADS = 32  # submits wait on a group commit; many in flight share its fsync
PER_UID = 8  # one user's slow submits (a big snapshot) never hold every thread: past this, the
# full app's own threads take theirs


class FastSubmit:
    """ASGI wrapper around the full app (which it needs only for `/tasks`' odd cases)."""

    def __init__(self, app: Any, service: TaskService, policy: AccessPolicy, audit: AuditLog,
                 limit: int) -> None:  # fmt: skip
        self.app, self.service, self.policy, self.audit, self.limit = (
            app, service, policy, audit, limit)  # fmt: skip
        self._model = SubmitRequest  # the full app's own model: one definition
        self._threads = ThreadPoolExecutor(SUBMIT_THREADS, thread_name_prefix="submit")
        self._in_flight: set[Future[Any]] = set()
        self._by_uid: Counter[int] = Counter()  # submits in flight per uid (the loop's alone)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/tasks" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        peer: dict[str, int] | None = (scope.get("extensions") or {}).get("peercred")
        role = self.policy.role_of(peer["uid"], peer["gid"]) if peer else None
        length = self._declared_length(scope["headers"])
        if (peer is None or role is None or RANK[role] < RANK["submitter"] or length is None
                or self._by_uid[peer["uid"]] >= PER_UID):  # fmt: skip
            await self.app(scope, receive, send)  # the full app refuses, and audits, in its words
            return
        body, gone = await self._read(receive)
        if gone:
            self._audit(peer, role, None, 400)  # as the full app: the body never came whole
            return
        try:
            request = self._model.model_validate_json(body)
        except ValidationError:
            await self.app(scope, self._replay(body, receive), send)
            return
        status, task_id = 500, None  # what is audited if the submit raised or was cancelled
        self._by_uid[peer["uid"]] += 1
        try:
            status, answer, task_id = await self._submit(request, peer)
        finally:
            self._by_uid[peer["uid"]] -= 1
            if self._by_uid[peer["uid"]] <= 0:
                del self._by_uid[peer["uid"]]
            self._audit(peer, role, task_id, status)  # before the caller has its answer
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(answer)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": answer})

    def close(self, timeout_s: float = 10.0) -> None:
        """Let the submits in flight finish (within `timeout_s`) before the stores close."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        wait(list(self._in_flight), timeout_s)

    def _declared_length(self, headers: list[tuple[bytes, bytes]]) -> int | None:
        """The body's declared length when the short path may take it: JSON, within the limit."""
        length: int | None = None
        json_body = False
        for name, value in headers:
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    return None
                length = int(value)
            elif name == b"content-type":
                if json_body:
                    return None  # twice: the full app reads the first, and says what it thinks
                json_body = value.split(b";")[0].strip().lower() == b"application/json"
                if not json_body:
                    return None
            elif name == b"transfer-encoding":
                return None
        return length if json_body and length is not None and length <= self.limit else None

    @staticmethod
    async def _read(receive: Any) -> tuple[bytes, bool]:
        """The whole body (its length is declared and within the limit), or gone: the client
        hung up."""
        parts: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"", True
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(parts), False

    @staticmethod
    def _replay(body: bytes, receive: Any) -> Any:
        sent = False

        async def replayed() -> Any:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replayed

    async def _submit(self, body: Any, peer: dict[str, int]) -> tuple[int, bytes, str | None]:
        """Status, JSON answer and the task's id, as the full app's route and handlers give."""
        requires = body.requires.model_dump() if body.requires else None
        caller = Caller.from_peer(peer)

        def submit() -> Any:
            return self.service.submit(
                body.type,
                body.args,
                body.priority,
                body.label,
                timeout_s=body.timeout_s,
                parent=body.parent,
                force=body.force,
                requires=requires,
                caller=caller,
            )

        try:
            running = self._threads.submit(submit)
            self._in_flight.add(running)
            running.add_done_callback(self._in_flight.discard)
            record, created = await asyncio.wrap_future(running)
        except (PiRenderError, OSError) as exc:
            answer = error_answer(exc)  # the full app's own
            return answer.status_code, bytes(answer.body), None
        return (201 if created else 200), record.model_dump_json().encode(), record.id

    def _audit(self, peer: dict[str, int], role: str, task_id: str | None, status: int) -> None:
        self.audit.append({"uid": peer["uid"], "gid": peer["gid"], "pid": peer.get("pid"),
                           "role": role, "action": "POST /tasks", "task_id": task_id,
                           "outcome": status})  # fmt: skip
