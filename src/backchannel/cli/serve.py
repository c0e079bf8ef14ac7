"""Long-running processes: ``serve``, ``worker`` and ``sandbox``, and ``migrate``, which a
deployment runs once before starting them."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console

from backchannel import __version__, logs
from backchannel.cli.common import (
    fail,
    load_cipher_or_fail,
    load_settings,
    open_configured_store,
)


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Ingest and dashboard only; run `worker` apart.")
    ] = False,
    no_sandbox: Annotated[
        bool, typer.Option("--no-sandbox", help="Do not embed the TikTok/Meta sandbox.")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            help="Server processes sharing the port, each with its own group commit; the"
            " first also runs the delivery worker. /metrics sums over them.",
        ),
    ] = 1,
) -> None:
    """Run the ingest API and the delivery worker (SQLite + local sandbox by default)."""
    from backchannel import serving
    from backchannel.members import active_members
    from backchannel.web.app import Options, create_app

    if workers < 1:
        fail("--workers: must be 1 or more (server processes)")
    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    host = host or settings.host
    port = port or settings.port
    store = open_configured_store(settings)
    load_cipher_or_fail(settings)  # fail before serving, not at the first token decrypt
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    base = f"http://{shown_host}:{port}"
    options = Options(worker=not no_worker, sandbox=not no_sandbox, self_url=base)
    console = Console(stderr=True, soft_wrap=True)
    shown_db = logs.safe_url(settings.database_url)
    console.print(f"[bold]Backchannel {__version__}[/bold]  database: {shown_db}")
    console.print(f"  ingest API   {base}/v1/events   (OpenAPI: {base}/openapi.json)")
    console.print(
        f"  sandbox      {base}/sandbox/_sandbox/tiktok/events"
        if not no_sandbox
        else "  sandbox      off"
    )
    console.print(
        f"  dashboard    {base}/admin   (overview, identifiers, dedup, dead letters,"
        f" test events, connections) and {base}/reports/gap"
    )
    if not active_members(store):
        console.print(
            "  [bold]no member yet[/bold]: set the first password with"
            " `backchannel admin set-password` to log in to the dashboard"
        )
    import time

    from backchannel.routing import active_connections
    from backchannel.store.base import DEFAULT_PROPERTY, qualified_name

    store.ensure_connections(settings.destinations, time.time())
    names = {p.id: p.name for p in store.properties()}
    for connection in active_connections(store, settings.destinations):
        name = qualified_name(
            connection.property_id, names.get(connection.property_id, ""), connection.name
        )
        if not connection.token_encrypted:
            where = settings.base_url_for(connection.destination)
            flags = (
                f" --connection {connection.name}"
                if connection.label != connection.destination
                else ""
            )
            if connection.property_id != DEFAULT_PROPERTY:
                flags += f" --property {names.get(connection.property_id, '')}"
            console.print(
                f"  [bold yellow]{name}: SANDBOX MODE[/bold yellow] - no token set; events go to"
                f" {where or base + '/sandbox'}, not to the real platform."
                f" Set one with `backchannel token set {connection.destination}{flags} --pixel ...`"
            )
        else:
            console.print(
                f"  {name}: live, pixel {connection.pixel}, token …{connection.token_last4}"
            )
    if not store.list_keys():
        console.print(
            "  [bold]no API key yet[/bold]: create one with `backchannel keys create --name shop`"
        )
    store.close()
    if workers > 1:
        from backchannel.process_group import run_group

        console.print(
            f"  processes    {workers} on one port; the first runs the delivery worker"
            if not no_worker
            else f"  processes    {workers} on one port, no delivery worker"
        )
        try:
            code = run_group(
                host=host,
                port=port,
                count=workers,
                grace=settings.shutdown_grace,
                worker=not no_worker,
                sandbox=not no_sandbox,
                self_url=base,
            )
        except OSError as exc:
            fail(f"--port: cannot listen on {host}:{port} ({exc.strerror or exc})")
        logging.shutdown()
        if code:
            raise typer.Exit(code)
        return
    serving.run(
        create_app(settings, options),
        host=host,
        port=port,
        grace=settings.shutdown_grace,
        **serving.UVICORN_OPTIONS,
    )


def worker(
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus /metrics and /healthz of this worker on this port."),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Interface for --metrics-port (non-loopback needs a metrics token).")
    ] = "127.0.0.1",
) -> None:
    """Run only the delivery worker (any number of them may share one database)."""
    import asyncio
    import signal

    from backchannel.delivery import RetryPolicy, build_worker
    from backchannel.metrics import Metrics
    from backchannel.store.runner import for_store
    from backchannel.targets import Targets

    settings = load_settings()
    if metrics_port is not None and not (0 < metrics_port < 65536):
        fail("--metrics-port: must be a port number (1-65535)")
    if (
        metrics_port is not None
        and metrics_host not in ("127.0.0.1", "::1", "localhost")
        and not settings.metrics_token
    ):
        fail(
            "--metrics-host: serving /metrics beyond loopback needs BACKCHANNEL_METRICS_TOKEN"
            " (Prometheus sends it as a Bearer token)"
        )
    logs.configure(settings.log_level, settings.log_format)
    store = open_configured_store(settings)
    cipher = load_cipher_or_fail(settings)
    targets = Targets(settings, store, cipher, sandbox_url=None)
    import time

    from backchannel.routing import active_lanes

    store.ensure_connections(settings.destinations, time.time())
    for lane in active_lanes(store, settings.destinations):
        try:
            resolved = targets.resolve(lane.connection_id)
        except RuntimeError as exc:
            name = lane.destination
            fail(f"{exc}: set a token, or BACKCHANNEL_{name.upper()}_BASE_URL to a sandbox")
        mode = "SANDBOX" if resolved.sandbox else "live"
        typer.echo(f"worker: {lane.name} -> {resolved.target.base_url} ({mode})", err=True)

    metrics = Metrics() if metrics_port is not None else None
    if metrics is not None:
        metrics.watch_queue(store.outbox_counts)

    async def run() -> None:
        runner = for_store(store)
        worker = build_worker(
            active_lanes(store, settings.destinations),
            runner,
            targets.getter,
            policy=RetryPolicy(base=settings.retry_base, cap=settings.retry_cap),
            concurrency=settings.delivery_concurrency,
            lease=settings.lease_seconds,
            listen_url=settings.listen_url,
            poll_interval=settings.poll_interval,
            metrics=metrics,
            active=lambda: active_lanes(store, settings.destinations),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        worker.start()
        server = None
        if metrics is not None and metrics_port is not None:
            from backchannel.web.ops import worker_metrics_server

            server = worker_metrics_server(
                metrics, worker, settings.metrics_token, metrics_host, metrics_port
            )
            serving = asyncio.create_task(server.serve())
            typer.echo(f"worker: metrics on http://{metrics_host}:{metrics_port}/metrics", err=True)
        await stop.wait()
        if server is not None:
            server.should_exit = True
            await serving
        await worker.stop(settings.shutdown_grace)
        runner.close()

    asyncio.run(run())
    logging.shutdown()


def sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9000,
    token: Annotated[
        str | None, typer.Option(help="Only accept this token (default: any).")
    ] = None,
    pixel_token: Annotated[
        list[str] | None,
        typer.Option(
            "--pixel-token",
            metavar="PIXEL=TOKEN",
            help="Only TOKEN may write to PIXEL (repeatable): one account per pixel.",
        ),
    ] = None,
    error_rate: Annotated[float, typer.Option(help="Share of requests answered 5xx.")] = 0.0,
    rate_limit_rate: Annotated[float, typer.Option(help="Share answered rate-limited.")] = 0.0,
    latency_ms: Annotated[int, typer.Option(help="Delay added to every answer.")] = 0,
    timeout_rate: Annotated[float, typer.Option(help="Share of requests that hang.")] = 0.0,
) -> None:
    """Run the TikTok and Meta emulators alone (point BACKCHANNEL_*_BASE_URL at it)."""
    from backchannel.sandbox import SandboxConfig
    from backchannel.sandbox.faults import faults_from_options
    from backchannel.sandbox.server import run

    for name, rate in (
        ("--error-rate", error_rate),
        ("--rate-limit-rate", rate_limit_rate),
        ("--timeout-rate", timeout_rate),
    ):
        if not 0.0 <= rate <= 1.0:
            fail(f"{name}: must be between 0 and 1")
    faults = faults_from_options(
        error_rate=error_rate,
        rate_limit_rate=rate_limit_rate,
        latency_ms=latency_ms,
        timeout_rate=timeout_rate,
    )
    owners: dict[str, str] = {}
    for pair in pixel_token or []:
        pixel, sep, value = pair.partition("=")
        if not sep or not pixel.strip() or not value.strip():
            fail(f"--pixel-token: expected PIXEL=TOKEN, got {pixel.strip() or pair!r}=…")
        owners[pixel.strip()] = value.strip()
    typer.echo(f"sandbox on http://{host}:{port}  (events: /_sandbox/tiktok/events)", err=True)
    logs.configure("warning")
    run(host, port, SandboxConfig(token=token, pixel_tokens=owners), faults)


def migrate() -> None:
    """Create or upgrade the database schema."""
    store = open_configured_store(load_settings())
    store.migrate()
    store.close()
    typer.echo("schema up to date")
