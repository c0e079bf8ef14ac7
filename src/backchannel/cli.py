"""The ``backchannel`` command line.

Every command turns bad input into a one-line message naming the field and the reason and a
non-zero exit (2 for usage and input errors), never a traceback: the CLI is used in shell
pipelines and cron jobs where a traceback is noise and an exit code is the contract.
"""

from __future__ import annotations

import getpass
import sqlite3
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from cryptography.fernet import MultiFernet
from rich.console import Console

from backchannel import __version__, config, credentials, logs
from backchannel.destinations import Target
from backchannel.notes import InvalidConversion
from backchannel.preview import normalize_all, render
from backchannel.store import Store, open_store
from backchannel.store.base import Connection

app = typer.Typer(
    name="backchannel",
    help="Server-side conversion tracking for TikTok's Events API and Meta's Conversions API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit: the single way commands report errors."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_settings() -> config.Settings:
    try:
        return config.load()
    except config.ConfigError as exc:
        fail(f"configuration: {exc}")


def read_secret(field: str, prompt: str, example: str) -> str:
    """A secret from the terminal (not echoed) or one line of stdin; never from argv, where
    it would sit in shell history and in every `ps` listing."""
    raw = getpass.getpass(f"{prompt}: ") if sys.stdin.isatty() else sys.stdin.readline()
    value = raw.strip()
    if not value:
        fail(f"{field}: empty (pipe it on stdin, e.g. `{example}`)")
    return value


def load_cipher_or_fail(settings: config.Settings) -> MultiFernet:
    """The token cipher, or a one-line error naming the key problem and exit 2."""
    try:
        return credentials.load_cipher(settings)
    except credentials.SecretError as exc:
        fail(str(exc))


def read_json_input(source: str) -> Any:
    """Read JSON from a file path or ``-`` (stdin); errors name the input and the position."""
    name = "stdin" if source == "-" else source
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        fail(f"{name}: cannot read ({exc.strerror})")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        fail(f"{name}: not valid JSON ({exc})")


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit(0)


@app.command()
def send(
    source: Annotated[
        str | None,
        typer.Argument(
            help="A JSON file with one conversion or an array; - for stdin."
            " With --test: one conversion (default: a built-in sample order)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the bodies; send nothing.")
    ] = False,
    test: Annotated[
        bool,
        typer.Option(
            "--test",
            help="Send one TEST conversion through the running gateway and show, per"
            " destination, what was sent, what the platform answered and which identifiers"
            " it carried.",
        ),
    ] = False,
    code: Annotated[
        str | None,
        typer.Option("--code", help="With --test: the test_event_code (default: Connections)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="With --test: seconds to wait for delivery.")
    ] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="With --test: print JSON.")] = False,
    destination: Annotated[
        list[str] | None,
        typer.Option("--destination", "-d", help="tiktok or meta (repeatable). Default: both."),
    ] = None,
    tiktok_pixel: Annotated[str | None, typer.Option(help="TikTok pixel code to show.")] = None,
    meta_pixel: Annotated[str | None, typer.Option(help="Meta pixel id to show.")] = None,
) -> None:
    """Preview a conversion (--dry-run), or fire a test order through the gateway (--test).

    --dry-run prints exactly what would be sent, one JSON line per destination. --test stores
    one conversion with a Test Events code in the configured database, waits for the running
    `serve` or `worker` to deliver it, and prints the side-by-side view (exit 1 if nothing
    delivered it within --timeout).
    """
    settings = load_settings()
    if test:
        if dry_run:
            fail("--test and --dry-run: choose one")
        if destination:
            fail("--destination: not with --test (event routing decides; see `route show`)")
        send_test(settings, source, code, timeout, as_json)
        return
    for flag, given in (("--code", code is not None), ("--json", as_json)):
        if given:
            fail(f"{flag}: only with --test")
    names = destination or ["tiktok", "meta"]
    for name in names:
        if name not in ("tiktok", "meta"):
            fail(f"--destination: unknown destination {name!r} (tiktok or meta)")
    if not dry_run:
        fail(
            "sending for real needs `backchannel serve`; use --dry-run to preview, or --test"
            " to fire a test order",
            2,
        )
    if source is None:
        fail("source: give a JSON file or - for stdin")
    document = read_json_input(source)
    items = document if isinstance(document, list) else [document]
    if not items:
        fail("input: an empty array holds no conversion")
    try:
        accepted = normalize_all(
            items,
            now=time.time(),
            default_region=settings.default_region,
            strip_params=settings.strip_params,
        )
    except InvalidConversion as exc:
        fail("; ".join(f"{n.path}: {n.reason}" for n in exc.notes))
    targets = {
        "tiktok": Target(
            settings.tiktok_url,
            tiktok_pixel or settings.tiktok_pixel or "",
            source_ids=settings.tiktok_source_ids,  # non-web events' event_source_id
        ),
        "meta": Target(
            settings.meta_url,
            meta_pixel or settings.meta_pixel or "",
            api_version=settings.meta_api_version,
        ),
    }
    chosen = {name: targets[name] for name in dict.fromkeys(names)}
    for line in render(accepted, chosen, now=time.time()):
        typer.echo(orjson.dumps(line).decode())


def send_test(
    settings: config.Settings, source: str | None, code: str | None, timeout: float, as_json: bool
) -> None:
    """``send --test``: ingest one test conversion, wait for the worker, print what happened."""
    import asyncio

    from backchannel import testorder
    from backchannel.routing import Routes
    from backchannel.store.runner import for_store

    if not 0 < timeout <= 600:
        fail("--timeout: must be more than 0 and at most 600 seconds")
    document = read_json_input(source) if source is not None else None
    store = open_configured_store(settings)
    try:
        connections = {d: store.get_connection(d) for d in settings.destinations}
        try:
            if document is None:
                chosen = testorder.resolve_code(code, connections, settings.destinations)
                item = testorder.sample_order(chosen)
            else:
                own = document.get("test_event_code") if isinstance(document, dict) else None
                given = code if code is not None else own if isinstance(own, str) else None
                chosen = testorder.resolve_code(given, connections, settings.destinations)
                item = testorder.prepare_item(document, chosen, override=code is not None)
        except testorder.FireError as exc:
            fail(str(exc))
        routes = Routes(settings.destinations)

        async def run() -> testorder.Fired:
            runner = for_store(open_configured_store(settings))  # closed with its threads
            try:
                return await testorder.fire(
                    item,
                    runner,
                    now=time.time(),
                    default_region=settings.default_region,
                    destinations=settings.destinations,
                    routes=routes,
                    stitch_window=settings.click_cookie_days * 86400.0,
                )
            finally:
                runner.close()

        try:
            fired = asyncio.run(run())
        except testorder.FireError as exc:
            fail(str(exc))
        store.audit(time.time(), "cli", "test.fire", f"{fired.event} {fired.event_id}")
        delivered = testorder.wait(store, fired.conversion_id, timeout)
        view = testorder.load_view(store, fired.conversion_id, settings.destinations)
    finally:
        store.close()
    assert view is not None
    if as_json:
        typer.echo(
            orjson.dumps(
                view.as_dict() | {"warnings": fired.warnings}, option=orjson.OPT_INDENT_2
            ).decode()
        )
    else:
        print_test_view(view, fired.warnings)
    if not delivered:
        fail(
            f"nothing delivered test event {fired.event_id} within {timeout:g} s: is"
            " `backchannel serve` or `backchannel worker` running on this database?",
            1,
        )


def print_test_view(view: Any, warnings: list[dict[str, Any]]) -> None:
    """The side-by-side view as rich tables, one per destination."""
    from rich.table import Table

    console = Console(soft_wrap=True)
    console.print(
        f"[bold]Test event[/bold] {view.event} {view.event_id}"
        f"  (conversion {view.conversion_id}, code {view.test_event_code})"
    )
    for note in warnings:
        console.print(f"  warning: {note['path']}: {note['reason']}")
    for d in view.destinations:
        table = Table(title=f"{d.destination}: {d.status}", show_lines=True)
        table.add_column("sent")
        table.add_column("answered")
        table.add_column("identifiers")
        answered = d.answered or d.last_error or ""
        if d.platform_ref:
            answered = f"{answered}\nref {d.platform_ref}"
        idents = "\n".join(f"{i.key}: {i.shown}" for i in d.identifiers)
        extra = f"test_event_code {d.code_sent}\n" if d.code_sent else ""
        table.add_row(extra + (d.sent or ""), answered, idents)
        console.print(table)


def open_configured_store(settings: config.Settings) -> Store:
    try:
        return open_store(settings.database_url)
    except (ValueError, OSError, sqlite3.Error) as exc:
        fail(f"database: {exc}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Ingest and dashboard only; run `worker` apart.")
    ] = False,
    no_sandbox: Annotated[
        bool, typer.Option("--no-sandbox", help="Do not embed the TikTok/Meta sandbox.")
    ] = False,
) -> None:
    """Run the ingest API and the delivery worker (SQLite + local sandbox by default)."""
    import uvicorn

    from backchannel.web.app import Options, create_app
    from backchannel.web.auth import PASSWORD_SETTING

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
    if store.get_admin_setting(PASSWORD_SETTING) is None:
        console.print(
            "  [bold]no admin password yet[/bold]: set one with"
            " `backchannel admin set-password` to log in to the dashboard"
        )
    for name in settings.destinations:
        connection = store.get_connection(name)
        if connection is None or not connection.token_encrypted:
            where = settings.tiktok_base_url if name == "tiktok" else settings.meta_base_url
            console.print(
                f"  [bold yellow]{name}: SANDBOX MODE[/bold yellow] - no token set; events go to"
                f" {where or base + '/sandbox'}, not to the real platform."
                f" Set one with `backchannel token set {name} --pixel ...`"
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
    uvicorn.run(
        create_app(settings, options),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        log_config=None,  # logs.configure above: JSON or text, redacted
        # browser leg: X-Forwarded-For is believed only from `trusted_proxies` (web/collect.py);
        # uvicorn's own handling would trust 127.0.0.1 and rewrite the client address first
        proxy_headers=False,
    )


@app.command()
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
    for name in settings.destinations:
        try:
            resolved = targets.resolve(name)
        except RuntimeError as exc:
            fail(f"{exc}: set a token, or BACKCHANNEL_{name.upper()}_BASE_URL to a sandbox")
        mode = "SANDBOX" if resolved.sandbox else "live"
        typer.echo(f"worker: {name} -> {resolved.target.base_url} ({mode})", err=True)

    metrics = Metrics() if metrics_port is not None else None
    if metrics is not None:
        metrics.watch_queue(store.outbox_counts)

    async def run() -> None:
        runner = for_store(store)
        worker = build_worker(
            settings.destinations,
            runner,
            targets.getter,
            policy=RetryPolicy(base=settings.retry_base, cap=settings.retry_cap),
            concurrency=settings.delivery_concurrency,
            lease=settings.lease_seconds,
            listen_url=settings.listen_url,
            poll_interval=settings.poll_interval,
            metrics=metrics,
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
        await worker.stop()
        runner.close()

    asyncio.run(run())


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9000,
    token: Annotated[
        str | None, typer.Option(help="Only accept this token (default: any).")
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
    typer.echo(f"sandbox on http://{host}:{port}  (events: /_sandbox/tiktok/events)", err=True)
    logs.configure("warning")
    run(host, port, SandboxConfig(token=token), faults)


keys_app = typer.Typer(help="Ingest API keys (stored hashed; shown once).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label, e.g. the shop's name.")],
    scope: Annotated[str, typer.Option(help="ingest, collect or admin.")] = "ingest",
) -> None:
    """Create a key and print it once."""
    if scope not in credentials.KEY_PREFIXES:
        fail("--scope: must be ingest, collect or admin")
    if not name.strip():
        fail("--name: must not be empty")
    store = open_configured_store(load_settings())
    key = credentials.new_api_key(scope)
    store.add_key(
        name.strip(),
        scope,
        credentials.key_display_prefix(key),
        credentials.key_hash(key),
        time.time(),
    )
    store.audit(time.time(), "cli", "key.create", f"{name} ({scope})")
    store.close()
    typer.echo(key)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (prefixes only)."""
    store = open_configured_store(load_settings())
    for k in store.list_keys():
        state = "revoked" if k.revoked_at else "active"
        typer.echo(f"{k.prefix}…\t{k.name}\t{k.scope}\t{state}")
    store.close()


@keys_app.command("revoke")
def keys_revoke(name_or_prefix: Annotated[str, typer.Argument(help="Key name or prefix.")]) -> None:
    """Revoke a key; requests with it are refused from now on."""
    store = open_configured_store(load_settings())
    count = store.revoke_key(name_or_prefix, time.time())
    if count == 0:
        store.close()
        fail(f"no active key named or prefixed {name_or_prefix!r}", 1)
    store.audit(time.time(), "cli", "key.revoke", name_or_prefix)
    store.close()
    typer.echo(f"revoked {count} key(s)")


token_app = typer.Typer(help="Destination access tokens (encrypted at rest).", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("set")
def token_set(
    destination: Annotated[str, typer.Argument(help="tiktok or meta")],
    pixel: Annotated[str, typer.Option(help="TikTok pixel code / Meta pixel (dataset) id.")],
    test_event_code: Annotated[str | None, typer.Option(help="Route to Test Events.")] = None,
) -> None:
    """Store a destination's token, read from stdin (never from the command line)."""
    if destination not in ("tiktok", "meta"):
        fail("destination: must be tiktok or meta")
    if not pixel.strip():
        fail("--pixel: must not be empty")
    token = read_secret(
        "token", f"{destination} access token", "backchannel token set ... < token.txt"
    )
    if token.lower().startswith("bearer "):
        fail("token: paste the raw token without 'Bearer ' (TikTok answers 40105 to that)")
    settings = load_settings()
    cipher = load_cipher_or_fail(settings)
    store = open_configured_store(settings)
    before = store.get_connection(destination)
    existed = before is not None and before.token_encrypted is not None
    if test_event_code is None and before is not None:  # keep the one set earlier (dashboard)
        test_event_code = before.test_event_code
    store.set_connection(
        Connection(
            destination,
            pixel.strip(),
            credentials.encrypt(cipher, token),
            token[-4:],
            test_event_code,
            time.time(),
        )
    )
    store.audit(
        time.time(),
        "cli",
        "token.replace" if existed else "token.set",
        f"{destination} pixel {pixel.strip()}",
    )
    store.close()
    typer.echo(f"{destination}: token …{token[-4:]} stored encrypted for pixel {pixel.strip()}")


@token_app.command("remove")
def token_remove(destination: Annotated[str, typer.Argument(help="tiktok or meta")]) -> None:
    """Forget a destination's token (it goes back to sandbox mode; pixel and test code stay,
    as when removed on the Connections page)."""
    store = open_configured_store(load_settings())
    before = store.get_connection(destination)
    if before is None or before.token_encrypted is None:
        store.close()
        fail(f"{destination}: no token stored", 1)
    store.set_connection(
        Connection(destination, before.pixel, None, None, before.test_event_code, time.time())
    )
    store.audit(time.time(), "cli", "token.remove", destination)
    store.close()
    typer.echo(f"{destination}: token removed")


route_app = typer.Typer(
    help="Event routing: which events go to which destination (absent: all events).",
    no_args_is_help=True,
)
app.add_typer(route_app, name="route")


@route_app.command("show")
def route_show() -> None:
    """Print each destination's routed events (the Connections page shows the same)."""
    from backchannel import routing

    settings = load_settings()
    store = open_configured_store(settings)
    try:
        routes = routing.read(store, settings.destinations)
    finally:
        store.close()
    for name, events in routes.items():
        typer.echo(f"{name}\t{routing.describe(events)}")


@route_app.command("set")
def route_set(
    destination: Annotated[str, typer.Argument(help="tiktok or meta")],
    events: Annotated[
        list[str], typer.Argument(help="Event names, e.g. Purchase CompletePayment.")
    ],
) -> None:
    """Send only these events to DESTINATION (other events get no outbox row for it)."""
    from backchannel import routing

    try:
        routing.check_destination(destination)
        names = routing.check_events(events)
    except routing.RouteError as exc:
        fail(str(exc))
    store = open_configured_store(load_settings())
    try:
        routing.store_route(store, destination, names, time.time())
        store.audit(time.time(), "cli", "route.set", f"{destination}: {routing.describe(names)}")
    finally:
        store.close()
    typer.echo(f"{destination}: {routing.describe(names)} (running servers apply it within 5 s)")


@route_app.command("clear")
def route_clear(destination: Annotated[str, typer.Argument(help="tiktok or meta")]) -> None:
    """Send every event to DESTINATION again."""
    from backchannel import routing

    try:
        routing.check_destination(destination)
    except routing.RouteError as exc:
        fail(str(exc))
    store = open_configured_store(load_settings())
    try:
        routing.store_route(store, destination, None, time.time())
        store.audit(time.time(), "cli", "route.clear", f"{destination}: all events")
    finally:
        store.close()
    typer.echo(f"{destination}: all events")


@app.command()
def replay(
    event_id: Annotated[str | None, typer.Option("--event-id", help="Re-queue this event.")] = None,
    all_dead: Annotated[
        bool, typer.Option("--all-dead", help="Re-queue every dead letter.")
    ] = False,
    destination: Annotated[str | None, typer.Option(help="Only this destination.")] = None,
) -> None:
    """Re-queue dead letters with their original event_id (so platforms still deduplicate)."""
    if (event_id is None) == (not all_dead):
        fail("give exactly one of --event-id ID or --all-dead")
    if destination is not None and destination not in ("tiktok", "meta"):
        fail("--destination: must be tiktok or meta")
    store = open_configured_store(load_settings())
    count = store.replay(time.time(), event_id=event_id, destination=destination)
    store.audit(time.time(), "cli", "replay", event_id or "all dead")
    store.close()
    if count == 0:
        fail("no dead letters matched", 1)
    typer.echo(f"re-queued {count} delivery(ies)")


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    store = open_configured_store(load_settings())
    store.migrate()
    store.close()
    typer.echo("schema up to date")


@app.command()
def status() -> None:
    """Outbox counts per destination and state."""
    store = open_configured_store(load_settings())
    counts = store.outbox_counts()
    typer.echo(orjson.dumps({"conversions": store.conversion_count(), "outbox": counts}).decode())
    store.close()


# -- sources and ledger: webhook secrets and CSV backfill -----------------------------------------
source_app = typer.Typer(
    help="Webhook sources (Shopify, Stripe): signing secrets, encrypted at rest.",
    no_args_is_help=True,
)
app.add_typer(source_app, name="source")


def _source_name(source: str) -> str:
    from backchannel.sources import SOURCES

    name = source.strip().lower()
    if name not in SOURCES:
        fail(f"source: must be one of {', '.join(SOURCES)}")
    return name


@source_app.command("set")
def source_set(source: Annotated[str, typer.Argument(help="shopify or stripe")]) -> None:
    """Store a source's webhook signing secret, read from stdin (never from the command line).

    Several secrets may be given comma-separated while one is being rotated.
    """
    name = _source_name(source)
    secret = read_secret(
        "secret", f"{name} webhook secret", "backchannel source set stripe < s.txt"
    )
    settings = load_settings()
    cipher = load_cipher_or_fail(settings)
    store = open_configured_store(settings)
    existed = store.get_source_secret(name) is not None
    store.set_source_secret(name, credentials.encrypt(cipher, secret), time.time())
    store.audit(time.time(), "cli", "source.replace" if existed else "source.set", name)
    store.close()
    overridden = getattr(settings, f"{name}_webhook_secret")
    typer.echo(f"{name}: webhook secret stored encrypted")
    if overridden:
        typer.echo(
            f"note: BACKCHANNEL_{name.upper()}_WEBHOOK_SECRET is set and wins over the stored one",
            err=True,
        )


@source_app.command("remove")
def source_remove(source: Annotated[str, typer.Argument(help="shopify or stripe")]) -> None:
    """Forget a source's stored webhook secret (its webhooks are then refused with 503)."""
    name = _source_name(source)
    store = open_configured_store(load_settings())
    if not store.delete_source_secret(name):
        store.close()
        fail(f"{name}: no webhook secret stored", 1)
    store.audit(time.time(), "cli", "source.remove", name)
    store.close()
    typer.echo(f"{name}: webhook secret removed")


@app.command("import")
def import_csv(
    file: Annotated[Path, typer.Argument(help="A CSV file of orders with a header row.")],
    mapping: Annotated[
        list[str] | None,
        typer.Option("--map", help="COLUMN=FIELD, e.g. --map 'Order Total=value' (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and summarise; store nothing.")
    ] = False,
    record_only: Annotated[
        bool,
        typer.Option("--record-only", help="Fill the order ledger only; send no conversions."),
    ] = False,
    event: Annotated[
        str, typer.Option(help="The event each order becomes (unless an 'event' column says).")
    ] = "CompletePayment",
) -> None:
    """Backfill orders from a CSV export: every row is checked first; any bad row, nothing stored.

    Good files are written in chunks of 1000 rows, each chunk one transaction. Re-running the
    same file is safe (the order id makes the event_id; the ledger keeps one row per order),
    so an interrupted import is completed by running it again. Orders inside a destination's
    time window (7 days) are enqueued for it; older ones, and all with --record-only, only go
    to the order ledger (the truth set of the gap report).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from backchannel import stitch
    from backchannel.destinations import DESTINATIONS
    from backchannel.ingest import to_record
    from backchannel.routing import Routes
    from backchannel.sources import csv_import, ledger

    settings = load_settings()
    started = time.monotonic()
    now = time.time()
    try:
        raw = file.read_bytes()
    except OSError as exc:
        fail(f"{file}: cannot read ({exc.strerror})")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        fail(f"{file}: not UTF-8 text (byte {exc.start}); export the CSV as UTF-8")
    try:
        maps = csv_import.parse_maps(mapping or [])
    except csv_import.MappingError as exc:
        fail(str(exc))
    rows_estimate = text.count("\n")
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=rows_estimate < 2000,
    )
    with progress:
        checking = progress.add_task("checking", total=rows_estimate)
        try:
            plan = csv_import.plan(
                text,
                maps=maps,
                event=event,
                now=now,
                default_region=settings.default_region,
                progress=lambda n: progress.advance(checking, n),
            )
        except csv_import.MappingError as exc:
            fail(f"{file}: {exc}")
    if plan.errors:
        lines = plan.error_lines()
        for line in lines[:100]:
            typer.echo(f"error: {line}", err=True)
        if len(lines) > 100:
            typer.echo(f"error: … and {len(lines) - 100} more", err=True)
        bad = len({line for line, _ in plan.errors})
        typer.echo(f"error: {bad} bad row(s) of {plan.total}: nothing was imported", err=True)
        if not dry_run:
            store = open_configured_store(settings)
            reason = {
                "error": "invalid_rows",
                "file": file.name,
                "rows": plan.total,
                "bad_rows": bad,
                "errors": [{"line": line, **note.as_dict()} for line, note in plan.errors[:100]],
            }
            store.record_rejection("csv", orjson.dumps(reason), time.time())
            store.close()
        raise typer.Exit(2)

    utm = ledger.utm_sources(settings.tiktok_utm_sources)
    # a session_id column: the landing sessions' signals are ledger evidence too
    # and the conversions are stitched from them (browser leg), as ingest does
    landings: dict[str, ledger.Landing] = {}
    provenance: dict[int, str] = {}
    if any(row.conversion.session_id for row in plan.rows):
        lookup = open_configured_store(settings)
        try:
            matches = csv_import.named_sessions(
                plan.rows, lambda ids: lookup.find_sessions(session_ids=ids)
            )
            landings = csv_import.landings(matches)
            named = [row.conversion for row in plan.rows]
            for index, origin in enumerate(stitch.stitch_all(named, matches)):
                if origin.matched_by is not None:
                    provenance[index] = origin.to_json()
        except Exception as exc:
            fail(f"database: {type(exc).__name__} while reading the rows' landing sessions")
        finally:
            lookup.close()
    send: list[Any] = []
    record: list[Any] = []
    routes = Routes(settings.destinations)  # event routing applies to imports as to the API
    if not record_only:
        reader = open_configured_store(settings)
        try:
            routes.load(reader)
        finally:
            reader.close()
    for index, row in enumerate(plan.rows):
        conversion = row.conversion
        targets = (
            ()
            if record_only
            else tuple(
                name
                for name in routes.destinations_for(conversion.event)
                if now - conversion.event_time <= DESTINATIONS[name].max_age(conversion)
            )
        )
        entry = ledger.entry(
            conversion, "csv", row.signals, utm, landing=landings.get(conversion.session_id or "")
        )
        assert entry is not None  # every row has an order id and a value
        if targets:
            new = to_record(conversion, row.warnings, "csv", targets, settings.tiktok_source_ids)
            new.stitched = provenance.get(index)
            new.ledger = entry
            send.append(new)
        else:
            entry.event_id = None  # no conversion was made for it
            record.append(entry)
    summary: dict[str, Any] = {
        "file": str(file),
        "rows": plan.total,
        "orders": len(plan.rows),
        "merged_rows": plan.merged,
        "to_enqueue": len(send),
        "ledger_only": len(record),
        "attributed_tiktok": sum(1 for n in send if n.ledger and n.ledger.attributed_tiktok)
        + sum(1 for e in record if e.attributed_tiktok),
        "dry_run": dry_run,
    }
    if dry_run:
        typer.echo(orjson.dumps(summary).decode())
        return

    store = open_configured_store(settings)
    written = new_conversions = new_orders = 0
    try:
        with progress:
            writing = progress.add_task("importing", total=len(send) + len(record))
            for start in range(0, len(send), csv_import.CHUNK):
                chunk = send[start : start + csv_import.CHUNK]
                new_conversions += sum(store.insert_conversions(chunk, time.time()))
                written += len(chunk)
                progress.advance(writing, len(chunk))
            for start in range(0, len(record), csv_import.CHUNK):
                chunk = record[start : start + csv_import.CHUNK]
                new_orders += sum(store.record_orders(chunk, time.time()))
                written += len(chunk)
                progress.advance(writing, len(chunk))
    except KeyboardInterrupt:
        store.close()
        fail(
            f"interrupted after {written} of {len(plan.rows)} orders (whole chunks only);"
            " run the same command again to complete the import",
            130,
        )
    except Exception as exc:
        store.close()
        fail(
            f"database: {type(exc).__name__} after {written} of {len(plan.rows)} orders (whole"
            " chunks only); run the same command again to complete the import"
        )
    store.audit(time.time(), "cli", "import", f"{file.name}: {len(plan.rows)} orders")
    store.close()
    elapsed = time.monotonic() - started
    summary.update(
        enqueued=new_conversions,
        duplicates=len(send) - new_conversions,
        ledger_only_new=new_orders,
        seconds=round(elapsed, 3),
        rows_per_second=round(plan.total / elapsed) if elapsed > 0 else None,
    )
    typer.echo(orjson.dumps(summary).decode())


# -- hardening: admin password, key rotation, doctor -----------------------------------------------
admin_app = typer.Typer(help="Admin access to the dashboard.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")


@admin_app.command("set-password")
def admin_set_password() -> None:
    """Set the admin password (asked twice on a terminal, else one line on stdin; never argv).

    At least 12 characters; stored as an scrypt hash. Every logged-in session ends.
    """
    from backchannel.web.auth import PasswordError, check_new_password, set_password

    if sys.stdin.isatty():
        password = getpass.getpass("new admin password: ")
        if getpass.getpass("again: ") != password:
            fail("password: the two entries differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        check_new_password(password)
    except PasswordError as exc:
        fail(f"password: {exc}")
    store = open_configured_store(load_settings())
    try:
        ended = set_password(store, password, time.time())
    finally:
        store.close()
    typer.echo(f"admin password set; {ended} session(s) logged out")


@token_app.command("rotate-key")
def token_rotate_key() -> None:
    """New encryption key; every stored token and secret re-encrypted in one transaction."""
    from backchannel.rotation import rotate

    settings = load_settings()
    store = open_configured_store(settings)
    try:
        result = rotate(settings, store)
    except credentials.SecretError as exc:
        fail(str(exc), 1)
    finally:
        store.close()
    if result.rewritten or not result.instructions:
        typer.echo(f"re-encrypted {result.rewritten} secret(s) with the new key")
    if result.instructions:
        typer.echo(f"next: {result.instructions}")
    else:
        typer.echo(f"{settings.key_file} now holds only the new key")
    audit_store = open_configured_store(settings)
    audit_store.audit(time.time(), "cli", "key.rotate", f"{result.rewritten} re-encrypted")
    audit_store.close()


@app.command()
def doctor(
    live: Annotated[
        bool, typer.Option("--live", help="Also contact the real TikTok/Meta endpoints.")
    ] = False,
) -> None:
    """Check configuration, database, key, tokens, destinations and clock; say what to fix."""
    from backchannel import doctor as checks

    report = checks.run(live=live)
    for line in report.lines():
        typer.echo(line)
    if report.failed:
        raise typer.Exit(1)


# -- retention ---------------------------------------------------------------------------------
@app.command()
def purge(
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="The window, e.g. 30d or 12h. Default: retention_days."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be removed; remove nothing.")
    ] = False,
) -> None:
    """Remove landing sessions, IPs and user agents older than the window; keep counts.

    Sessions last seen before the cutoff are counted into session_rollups (for the gap
    report), then deleted with their email hashes and browser events. Conversions received
    before it lose their IP and user agent, except those still waiting for delivery.
    """
    from datetime import UTC, datetime

    from backchannel import retention

    settings = load_settings()
    if older_than is None:
        if settings.retention_days == 0:
            fail("retention_days is 0 (keep forever); pass --older-than 30d to purge anyway")
        older_than = f"{settings.retention_days}d"
    try:
        window = retention.parse_window(older_than)
    except ValueError as exc:
        fail(f"--older-than: {exc}")
    now = time.time()
    cutoff = now - window
    store = open_configured_store(settings)
    try:
        report = retention.purge_now(store, cutoff, now, dry_run=dry_run)
        if not dry_run:
            store.audit(
                time.time(),
                "cli",
                "purge",
                f"older than {older_than}: {report.sessions} sessions,"
                f" {report.conversions_scrubbed} conversions scrubbed",
            )
    finally:
        store.close()
    when = datetime.fromtimestamp(cutoff, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if dry_run:
        typer.echo(
            f"dry run: would purge {report.sessions} landing session(s) last seen before {when}"
            " (their counts kept in session_rollups)"
        )
        typer.echo(
            f"dry run: would scrub ip and user agent from {report.conversions_scrubbed}"
            " conversion(s) received before then"
        )
    else:
        typer.echo(
            f"purged {report.sessions} landing session(s) last seen before {when}, with"
            f" {report.session_emails} email hash(es) and {report.browser_events} browser"
            " event(s); their counts are kept in session_rollups"
        )
        typer.echo(
            f"scrubbed ip and user agent from {report.conversions_scrubbed} conversion(s)"
            " received before then"
        )
    prefix = "dry run: would delete" if dry_run else "deleted"
    typer.echo(
        f"{prefix} {report.rejections} refused-input record(s) and remove the client ip from"
        f" {report.audit_ips} audit row(s) older than then"
        if dry_run
        else f"{prefix} {report.rejections} refused-input record(s) and removed the client ip"
        f" from {report.audit_ips} audit row(s) older than then"
    )
    if report.conversions_held:
        kept = "dry run: would keep" if dry_run else "kept"
        typer.echo(
            f"{kept} ip and user agent of {report.conversions_held} conversion(s) still waiting"
            " for delivery (pending or in flight): the platforms need them; a later purge"
            " scrubs them once delivered"
        )


# -- reports -------------------------------------------------------------------------------------
report_app = typer.Typer(help="Reports computed from the store.", no_args_is_help=True)
app.add_typer(report_app, name="report")

REPORT_FORMATS = ("table", "csv", "json")


def _parse_day(option: str, value: str) -> Any:
    from datetime import date

    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option}: {value!r} is not a date (YYYY-MM-DD)")


@report_app.command("gap")
def report_gap(
    start: Annotated[str, typer.Option("--from", help="First day, YYYY-MM-DD (UTC).")],
    end: Annotated[str, typer.Option("--to", help="Last day, YYYY-MM-DD (UTC), included.")],
    switch_on: Annotated[
        str | None,
        typer.Option("--switch-on", help="The day the server leg was switched on, YYYY-MM-DD."),
    ] = None,
    output: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    chart_dir: Annotated[
        Path | None,
        typer.Option(
            "--chart-dir",
            help="Also write the charts there as SVG (timeseries, gap, breakdown-<section>).",
        ),
    ] = None,
    chart_format: Annotated[
        str, typer.Option("--chart-format", help="svg (the only export format).")
    ] = "svg",
    pixel_event: Annotated[
        str,
        typer.Option("--pixel-event", help="Event of the imported Events Manager counts."),
    ] = "CompletePayment",
) -> None:
    """The Pixel gap: TikTok-attributed orders the Pixel reported, the server leg recovered,
    and where the Pixel missed (browser, ad blockers, iOS version, page load time)."""
    from backchannel import charts, report

    first = _parse_day("--from", start)
    last = _parse_day("--to", end)
    if last < first:
        fail(f"--to: {end} is before --from {start}")
    switch = _parse_day("--switch-on", switch_on) if switch_on is not None else None
    if output not in REPORT_FORMATS:
        fail(f"--format: must be one of {', '.join(REPORT_FORMATS)}")
    if chart_format.lower() != "svg":
        fail(
            f"--chart-format: {chart_format!r} is not supported; charts are exported as SVG"
            " (any browser opens them; `rsvg-convert -o gap.png gap.svg` makes a PNG)"
        )
    if chart_dir is not None and chart_dir.exists() and not chart_dir.is_dir():
        fail(f"--chart-dir: {chart_dir} exists and is not a directory")
    store = open_configured_store(load_settings())
    try:
        result = report.from_store(store, first, last, switch, pixel_event=pixel_event)
    finally:
        store.close()
    if chart_dir is not None:
        try:
            chart_dir.mkdir(parents=True, exist_ok=True)
            for name, svg in charts.gap_charts(result).items():
                path = chart_dir / f"{name}.svg"
                path.write_text(svg, encoding="utf-8")
                typer.echo(str(path), err=True)  # stderr: stdout stays the report
        except OSError as exc:
            fail(f"--chart-dir: cannot write charts into {chart_dir}: {exc.strerror or exc}")
    if output == "json":
        typer.echo(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    if output == "csv":
        typer.echo(report.to_csv(result), nl=False)
        return
    from rich.table import Table

    title = f"Gap report {first.isoformat()} – {last.isoformat()}"
    if switch is not None:
        title += f" (server leg on since {switch.isoformat()})"
    table = Table(title=title)
    for name in ("section", "bucket", "orders (base)", "pixel only", "server delivered"):
        table.add_column(name, justify="left" if name in ("section", "bucket") else "right")
    for name in ("deduplicated", "recovered", "coverage", "pixel coverage"):
        table.add_column(name, justify="right")
    for section, bucket, t in report.table_rows(result):
        table.add_row(
            section,
            bucket,
            str(t.orders),
            str(t.pixel_only),
            str(t.server_delivered),
            str(t.deduplicated),
            str(t.recovered),
            report.percent(t.coverage),
            report.percent(t.pixel_coverage),
        )
    console = Console()
    console.print(table)
    console.print(
        f"{result.ledger_orders} ledger order(s) in range, {result.total.orders} attributed to"
        " TikTok (the truth set). Every figure is a count of those orders; 'unknown' buckets"
        " are orders whose landing session is not stored (never seen, or purged)."
    )
    imported = result.pixel_import
    if imported is not None:
        console.print(
            f"Events Manager reported {imported.count} {imported.event} Pixel event(s)"
            f" (days covered {imported.days_covered} of {imported.days_in_range}) next to the"
            f" mirror's {result.total.pixel_only}; recovered vs reported:"
            f" {result.recovered_vs_reported}."
        )


@report_app.command("import-pixel")
def report_import_pixel(
    file: Annotated[Path, typer.Argument(help="CSV exported from TikTok Events Manager.")],
    event: Annotated[
        str, typer.Option("--event", help="The event these counts are of.")
    ] = "CompletePayment",
    date_column: Annotated[
        str, typer.Option("--date-column", help="Header of the day column.")
    ] = "date",
    count_column: Annotated[
        str, typer.Option("--count-column", help="Header of the count column.")
    ] = "count",
    date_format: Annotated[
        str | None,
        typer.Option("--date-format", help="strptime format when days are not YYYY-MM-DD."),
    ] = None,
    event_column: Annotated[
        str | None,
        typer.Option(
            "--event-column",
            help="Header of the event column, when the export lists several events:"
            " only the rows of --event are imported.",
        ),
    ] = None,
) -> None:
    """Import daily Pixel counts from an Events Manager export, for the gap report's
    "pixel-only from an export" variant. Every row is checked before anything is written;
    re-importing a day replaces its count."""
    from backchannel import report

    if not event.strip():
        fail("--event: empty")
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        fail(f"FILE: cannot read {file}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        fail(f"FILE: {file} is not UTF-8 text (export the CSV as UTF-8)")
    try:
        parsed = report.parse_pixel_csv(
            text,
            date_column=date_column,
            count_column=count_column,
            date_format=date_format,
            event_column=event_column,
            event=event.strip(),
        )
    except report.PixelCsvError as exc:
        typer.echo(f"error: {file.name}: nothing imported", err=True)
        for problem in exc.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(2) from None
    store = open_configured_store(load_settings())
    try:
        now = time.time()
        written = store.set_pixel_counts(
            [(day, event.strip(), count) for day, count in parsed.days], now
        )
        store.audit(now, "cli", "pixel_counts.import", f"{file.name}: {written} day(s) of {event}")
    finally:
        store.close()
    first, last = parsed.days[0][0], parsed.days[-1][0]
    summed = f" ({parsed.rows} rows summed per day)" if parsed.rows != written else ""
    other = f"; {parsed.skipped} row(s) of other events left out" if parsed.skipped else ""
    typer.echo(f"imported {written} day(s) of {event.strip()}, {first} to {last}{summed}{other}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
