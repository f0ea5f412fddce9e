"""Request size limit as plain ASGI middleware: a body past the limit gets 413 and is never read
in full, whether it declares its length or streams chunks."""

import json
from typing import Any

ASGIApp = Any


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        too_large = False
        refused = False

        async def limited_receive() -> Any:
            nonlocal seen, too_large
            if too_large:  # the app asks for more: the body has ended, as far as it knows
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_large = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def watched_send(message: Any) -> None:
            nonlocal refused
            if too_large:  # whatever the app answers to a cut body, the answer is 413
                if not refused:
                    refused = True
                    await self._refuse(send)
                return
            await send(message)

        await self.app(scope, limited_receive, watched_send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({
            "error": "RequestTooLarge",
            "message": f"the request body is larger than {self.limit} bytes",
        }).encode()  # fmt: skip
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
