"""The gateway as benchmarks run it: the real app plus a no-op POST endpoint for comparison.

Why a separate script: the no-op endpoint (`POST /_bench/noop`: read the body, answer 202) must
live on the *same* server and event loop as `/v1/events`, so the ratio between the two measures
our ingest work and nothing else; it has no place in the product itself.

    python bench/_server.py PORT [--no-worker]
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import Request
from fastapi.responses import Response

from backchannel import config
from backchannel.web.app import Options, create_app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--no-worker", action="store_true")
    args = parser.parse_args()
    settings = config.load()
    app = create_app(settings, Options(worker=not args.no_worker, sandbox=False))

    @app.post("/_bench/noop", include_in_schema=False)
    async def noop(request: Request) -> Response:
        await request.body()
        return Response(b'{"accepted":1}', status_code=202, media_type="application/json")

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
