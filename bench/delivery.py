"""Delivery benchmark: drain a backlog to the sandbox over real HTTP, and peak memory.

A backlog of N conversions (two outbox rows each: TikTok and Meta) is written straight into a
fresh SQLite store, then `backchannel serve --no-sandbox` (API + worker: the embedded default's
process) is started against a separate `backchannel sandbox` process and timed until the
sandbox has accepted every event for both destinations. Figures: deliveries per second per
destination and together, the sandbox's duplicate count (must be 0), and the serve process's
peak RSS (VmHWM) while it holds and drains the backlog.

    ./dev bench delivery [--n 100000]          # throughput, every registered destination
    ./dev bench delivery --destinations tiktok,meta   # the two-destination figure of before
    ./dev bench delivery --n 1000000           # the 1M-backlog memory figure

Destinations (issue 15): by default every registered destination gets a row per conversion;
those off until connected are connected first with their emulator's sample credentials
(``token set``, as the reliability suite does), and the conversion carries every platform's
click id so that no destination refuses it.

Properties (issue 14): ``--properties N`` drains, in one run, the same backlog twice: held by
one property (2 connections: 2 delivery lanes) and spread round-robin over N properties with 2
connections each (2N lanes, each with DELIVERY_CONCURRENCY requests in flight), and prints
both figures and their ratio:

    ./dev bench delivery --properties 20 [--n 100000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from _common import (
    bench_env,
    conversion,
    cpu_seconds,
    free_port,
    process,
    python,
    rss_mb,
    wait_http,
)
from backchannel import destinations as registry
from backchannel import identifiers
from backchannel.destinations import ON_BY_DEFAULT
from backchannel.events import normalize
from backchannel.ingest import to_record
from backchannel.sandbox.app import emulators
from backchannel.store.base import DEFAULT_PROPERTY, NewConversion
from backchannel.store.sqlite import SqliteStore

CHUNK = 5000


def template_conversion() -> dict[str, Any]:
    """The bench's purchase with every platform's click id: Google's, and each click id a
    destination declares (a landing would have brought one of them; here all, so every
    destination can take the same conversion)."""
    doc = conversion(0, "TEMPLATE")
    doc["user"].update(ga_client_id="GA1.1.1234567890.1700000000", gclid="bench-gclid")
    for field, spec in identifiers.generic().items():
        if spec.kind == "click":
            doc["user"][field] = f"bench-{field}"
    return doc


def connect(env: dict[str, str], workdir: Path, names: tuple[str, ...]) -> None:
    """Connect the destinations that are off until connected, with their emulator's sample
    credentials, through the CLI (the token and secrets on stdin)."""
    for name in names:
        destination = registry.get(name)
        if destination.ON_BY_DEFAULT:
            continue
        sample = emulators()[name].sample_credentials
        args = [name, "--pixel", sample["pixel"]]
        stdin = [sample["token"]]
        for credential in destination.CREDENTIALS:
            if credential.key in ("pixel", "token") or credential.key not in sample:
                continue
            if credential.secret:
                args += ["--secret", credential.key]
                stdin.append(sample[credential.key])
            else:
                args += ["--set", f"{credential.key}={sample[credential.key]}"]
        subprocess.run(
            python("-m", "backchannel.cli", "token", "set", *args),
            env=env,
            cwd=workdir,
            input="\n".join(stdin) + "\n",
            text=True,
            check=True,
            capture_output=True,
        )


def prefill(
    db: Path, n: int, properties: int = 1, names: tuple[str, ...] = ("tiktok", "meta")
) -> float:
    """Write n conversions + 2n outbox rows, conversion i in property i % ``properties``
    (each with its TikTok and Meta sandbox connections); returns seconds. Payloads share one
    template."""
    store = SqliteStore(db)
    now = time.time()
    owners = [DEFAULT_PROPERTY]
    for i in range(1, properties):
        created = store.create_property(f"prop{i:02d}", now, destinations=ON_BY_DEFAULT)
        assert created is not None
        owners.append(created)
    normalized = normalize(template_conversion(), now=now).conversion
    for name in names:
        refused = registry.get(name).refusals(normalized)
        assert not refused, f"{name} would refuse the bench's conversion: {refused}"
    template = to_record(normalized, [], "api", names)
    started = time.perf_counter()
    for start in range(0, n, CHUNK):
        records = []
        for i in range(start, min(n, start + CHUNK)):
            order = f"bench-{i}"
            records.append(
                NewConversion(
                    event=template.event,
                    event_id=f"CompletePayment-{order}",
                    event_time=template.event_time,
                    order_id=order,
                    session_id=None,
                    test_event_code=None,
                    payload=template.payload.replace(b"TEMPLATE-0", order.encode()),
                    warnings=b"[]",
                    origin="api",
                    connections=names,
                    property_id=owners[i % len(owners)],
                )
            )
        store.insert_conversions(records, now)
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def stats(url: str, destination: str) -> dict[str, int]:
    response = httpx.get(f"{url}/_sandbox/{destination}/stats", timeout=30)
    data: dict[str, int] = orjson.loads(response.content)
    return data


def drain(n: int, properties: int, timeout: float, names: tuple[str, ...]) -> tuple[float, float]:
    """Prefill a fresh store (n conversions in ``properties`` properties, a row for each of
    ``names``), start a sandbox and `serve`, and time until the sandbox accepted every event
    for every destination."""
    workdir = Path(tempfile.mkdtemp(prefix="bc-bench-"))
    sandbox_port, port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    env = bench_env(
        workdir,
        **{f"BACKCHANNEL_{name.upper()}_BASE_URL": sandbox_url for name in names},
    )
    connect(env, workdir, names)
    seconds = prefill(workdir / "bench.db", n, properties, names)
    k = len(names)
    print(
        f"delivery benchmark: backlog of {n:,} conversions ({k * n:,} deliveries to"
        f" {', '.join(names)}) in {properties} propert{'y' if properties == 1 else 'ies'}"
        f" ({k * properties} connections), written in {seconds:.1f} s"
    )
    sandbox_cmd = python("-m", "backchannel.cli", "sandbox", "--port", str(sandbox_port))
    serve_cmd = python("-m", "backchannel.cli", "serve", "--port", str(port), "--no-sandbox")
    with process(sandbox_cmd, env, workdir) as sandbox:
        wait_http(sandbox_url + "/_sandbox/faults")
        with process(serve_cmd, env, workdir) as serve:
            wait_http(f"http://127.0.0.1:{port}/healthz")
            serve_cpu, sandbox_cpu = cpu_seconds(serve.pid), cpu_seconds(sandbox.pid)
            started = time.perf_counter()
            done: dict[str, float] = {}
            peak_rss = 0.0
            while len(done) < k and time.perf_counter() - started < timeout:
                time.sleep(0.5)
                peak_rss = max(peak_rss, rss_mb(serve.pid, "VmHWM"))
                for destination in names:
                    if (
                        destination not in done
                        and stats(sandbox_url, destination)["accepted_events"] >= n
                    ):
                        done[destination] = time.perf_counter() - started
            total = time.perf_counter() - started
            serve_cpu = cpu_seconds(serve.pid) - serve_cpu
            sandbox_cpu = cpu_seconds(sandbox.pid) - sandbox_cpu
            results = {d: stats(sandbox_url, d) for d in names}
    for destination in names:
        s = results[destination]
        took = done.get(destination)
        shown = f"{n / took:,.0f} events/s in {took:.1f} s" if took else "DID NOT FINISH"
        print(
            f"{destination:<10} {shown}  (requests {s['requests']},"
            f" unique {s['unique_event_ids']:,}, duplicates {s['duplicates']})"
        )
    rate: float = k * n / total if len(done) == k else 0.0
    if rate:
        print(f"all {k:<6} {rate:,.0f} deliveries/s (wall clock for all {k * n:,})")
    print(
        f"CPU: serve {serve_cpu:.1f} s ({serve_cpu / total:.0%} of one core),"
        f" sandbox {sandbox_cpu:.1f} s ({sandbox_cpu / total:.0%}) over {total:.1f} s"
    )
    print(f"serve peak RSS while draining: {peak_rss:.0f} MB")
    shutil.rmtree(workdir, ignore_errors=True)
    return rate, peak_rss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--properties", type=int, default=1, help="also drain it spread over N properties"
    )
    parser.add_argument(
        "--destinations",
        default="all",
        help="comma-separated destination names, or 'all' (every registered one)",
    )
    args = parser.parse_args()
    names = (
        registry.NAMES
        if args.destinations == "all"
        else tuple(registry.get(n.strip()).name for n in args.destinations.split(","))
    )
    if args.properties > 1 and set(names) - set(ON_BY_DEFAULT):
        parser.error(
            "--properties N drains the destinations on by default: add"
            f" --destinations {','.join(ON_BY_DEFAULT)}"
        )
    print(f"load before: {Path('/proc/loadavg').read_text().strip()}")
    single = drain(args.n, 1, args.timeout, names)
    if args.properties > 1:
        several = drain(args.n, args.properties, args.timeout, names)
        ratio = f"{several[0] / single[0]:.1%}" if single[0] else "-"
        print(
            f"deliveries/s: 1 property {single[0]:,.0f}, {args.properties} properties"
            f" {several[0]:,.0f} = {ratio} of single-property; peak RSS {single[1]:.0f} MB vs"
            f" {several[1]:.0f} MB"
        )
    print(f"load after: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
