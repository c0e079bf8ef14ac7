"""Run the demo shop against a running gateway.

    KEY=$(backchannel keys create --name shop)
    SITE=$(backchannel keys create --name site --scope collect)
    python examples/shop/run.py --gateway http://127.0.0.1:8000 --ingest-key $KEY \\
        --site-key $SITE --port 8080

Then open http://127.0.0.1:8080/?ttclid=E.C.P.demo&utm_source=tiktok, buy a tee, and look at
the sandbox (http://127.0.0.1:8000/sandbox/_sandbox/tiktok/events). Start the gateway with
BACKCHANNEL_TRUSTED_PROXIES=127.0.0.1 so it believes the shop's X-Forwarded-For.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shop.app import create_shop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", default="http://127.0.0.1:8000")
    parser.add_argument("--ingest-key", required=True)
    parser.add_argument("--site-key", required=True)
    parser.add_argument("--pixel", default="CDEMOPIXEL")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    app = create_shop(
        args.gateway, ingest_key=args.ingest_key, site_key=args.site_key, pixel=args.pixel
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
