"""The gateway as benchmarks run it: the real app plus two no-op POST endpoints for comparison.

Why a separate script: the no-op endpoints must live on the *same* server and event loop as
`/v1/events`, so the ratio between them measures our ingest work and nothing else; they have
no place in the product itself.

- `POST /_bench/noop`: a FastAPI route behind the app's middlewares (read the body, answer 202),
  matched after every other route (~40, ~90 µs of route matching): the reference since the
  first benchmark, kept for comparison;
- `POST /_bench/noop-first`: the same as a plain Starlette route at the head of the router,
  exactly where `/v1/events` and `/v1/collect` sit: the fair reference for them;
- `POST /_bench/asgi-noop`: a bare ASGI callable in front of the whole app (uvicorn's own cost).

    python bench/_server.py PORT [--workers N] [--no-worker] [--no-checkpointer] [--no-freeze-gc]
                                 [--profile FILE]

``--profile FILE`` (one process): run under cProfile and write its stats to FILE on SIGTERM.

With ``--workers N`` (N > 1) it runs as ``serve --workers N`` does (backchannel.process_group:
this process binds the port and supervises N children, the first of which runs the delivery
worker unless ``--no-worker``), each child serving this script's app; the children are this
script again, with ``--child`` and the group's arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

import uvicorn
from fastapi import Request
from fastapi.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from backchannel import config
from backchannel.config import Settings
from backchannel.web.app import Options, create_app

HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"14")]
#: the bench's own switches, handed to the children of a group through the environment
FLAGS_ENV = "BACKCHANNEL_BENCH_SERVER_FLAGS"


def bench_app(settings: Settings, options: Options) -> Any:
    """The product's app with the two reference endpoints."""
    app = create_app(settings, options)

    @app.post("/_bench/noop", include_in_schema=False)
    async def noop(request: Request) -> Response:
        await request.body()
        return Response(b'{"accepted":1}', status_code=202, media_type="application/json")

    app.router.routes.insert(0, Route("/_bench/noop-first", noop, methods=["POST"]))

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

    return asgi


def child() -> None:
    """One process of a group: the bench's switches apply to it too."""
    from backchannel.process_group import child_main

    flags = set(os.environ.get(FLAGS_ENV, "").split(","))

    def make(settings: Settings, options: Options) -> Any:
        options = dataclasses.replace(
            options,
            sandbox=False,
            checkpointer="--no-checkpointer" not in flags,
            freeze_gc="--no-freeze-gc" not in flags,
        )
        return bench_app(settings, options)

    child_main(sys.argv[2:], make)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child()
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--workers", type=int, default=1, help="server processes (a group)")
    parser.add_argument("--no-worker", action="store_true")
    parser.add_argument("--no-checkpointer", action="store_true", help="SQLite's inline ones")
    parser.add_argument("--no-freeze-gc", action="store_true", help="CPython's default GC")
    parser.add_argument("--profile", default="", help="cProfile stats to this file (1 process)")
    args = parser.parse_args()
    settings = config.load()
    if args.workers > 1:
        from backchannel.process_group import ProcessGroup, listen

        os.environ[FLAGS_ENV] = ",".join(
            flag
            for flag, on in (
                ("--no-checkpointer", args.no_checkpointer),
                ("--no-freeze-gc", args.no_freeze_gc),
            )
            if on
        )
        group = ProcessGroup(
            listen("127.0.0.1", args.port),
            count=args.workers,
            grace=settings.shutdown_grace,
            worker=not args.no_worker,
            sandbox=False,
            self_url=f"http://127.0.0.1:{args.port}",
            command=[sys.executable, os.path.abspath(__file__), "--child"],
        )
        sys.exit(group.run())
    options = Options(
        worker=not args.no_worker,
        sandbox=False,
        checkpointer=not args.no_checkpointer,
        freeze_gc=not args.no_freeze_gc,
    )
    app = bench_app(settings, options)
    if not args.profile:
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
        return
    import cProfile
    import signal

    # uvicorn re-raises SIGTERM once it has stopped: absorb it, so the stats get written
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
