"""The gateway as benchmarks run it: the real app plus two no-op POST endpoints for comparison.

Why a separate script: the no-op endpoints must live on the *same* server and event loop as
`/v1/events`, so the ratio between them measures our ingest work and nothing else; they have
no place in the product itself.

- `POST /_bench/noop`: a FastAPI route behind the app's middlewares (read the body, answer 202);
- `POST /_bench/asgi-noop`: a bare ASGI callable in front of the whole app (uvicorn's own cost).

    python bench/_server.py PORT [--no-worker] [--no-checkpointer] [--no-freeze-gc]
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import Request
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from backchannel import config
from backchannel.web.app import Options, create_app

HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"14")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--no-worker", action="store_true")
    parser.add_argument("--no-checkpointer", action="store_true", help="SQLite's inline ones")
    parser.add_argument("--no-freeze-gc", action="store_true", help="CPython's default GC")
    args = parser.parse_args()
    settings = config.load()
    options = Options(
        worker=not args.no_worker,
        sandbox=False,
        checkpointer=not args.no_checkpointer,
        freeze_gc=not args.no_freeze_gc,
    )
    app = create_app(settings, options)

    @app.post("/_bench/noop", include_in_schema=False)
    async def noop(request: Request) -> Response:
        await request.body()
        return Response(b'{"accepted":1}', status_code=202, media_type="application/json")

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/_bench/asgi-noop":
            more = True
            while more:
                message = await receive()
                more = message.get("more_body", False)
            await send({"type": "http.response.start", "status": 202, "headers": HEADERS})
            await send({"type": "http.response.body", "body": b'{"accepted":1}'})
            return
        await app(scope, receive, send)

    uvicorn.run(asgi, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
