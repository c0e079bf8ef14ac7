"""``backchannel doctor``: check a deployment and say what to fix.

Checks, in order (a failed check can make later ones moot; they then say so):

* configuration: the file and ``BACKCHANNEL_*`` variables load;
* database: reachable, and every shipped migration applied (read without migrating: the
  doctor never changes the database);
* encryption key: from the environment, or a key file that exists and only its owner reads;
* tokens: every stored token decrypts with that key;
* destinations: each one's endpoint answers HTTP — the sandbox or a configured base URL; the
  real TikTok/Meta endpoints only with ``--live`` (the doctor never talks to a platform unless
  asked);
* clock: the skew against the ``Date`` header of those answers (platforms refuse events from
  the future, and Backchannel refuses conversions more than 5 minutes ahead).

Each check is ✓ (fine), ✗ (with the fix) or – (skipped, with the reason).
"""

from __future__ import annotations

import email.utils
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from backchannel import config, credentials, logs
from backchannel import destinations as registry
from backchannel.extras import MissingExtra, require
from backchannel.store import migrations, open_store
from backchannel.store.base import Store, qualified_name
from backchannel.store.sqlite import path_from_url

MAX_SKEW = 30.0  # seconds of clock difference tolerated
HTTP_TIMEOUT = 5.0


@dataclass(slots=True)
class Check:
    name: str
    ok: bool | None  # None: skipped
    detail: str
    fix: str | None = None


@dataclass(slots=True)
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(c.ok is False for c in self.checks)

    def add(self, name: str, ok: bool | None, detail: str, fix: str | None = None) -> None:
        self.checks.append(Check(name, ok, detail, fix))

    def lines(self) -> list[str]:
        width = max((len(c.name) for c in self.checks), default=0)
        out = []
        for c in self.checks:
            mark = {True: "✓", False: "✗", None: "–"}[c.ok]
            out.append(f"{mark} {c.name:<{width}}  {c.detail}")
            if c.ok is False and c.fix:
                out.append(f"  {' ' * width}  fix: {c.fix}")
        return out


def _schema_version(url: str) -> int:
    """The applied migration level, read without applying anything."""
    if url.startswith("sqlite:"):
        path = Path(path_from_url(url))
        if not path.exists():
            raise FileNotFoundError(f"no database file at {path}")
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()
        return int(row[0] or 0)
    psycopg = require("psycopg", "postgres", "a postgresql:// database URL")

    with psycopg.connect(url, connect_timeout=int(HTTP_TIMEOUT)) as conn:
        try:
            found = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(found[0] or 0) if found else 0


def _validate(
    report: Report, client: httpx.Client, name: str, settings: config.Settings, store: Store
) -> None:
    """A destination whose production endpoint accepts anything (GA4 answers 2xx to every
    request, valid or not) declares a validation probe: ask its validation server about a
    sample built with this connection's keys, and say what it would silently drop."""
    spec = registry.get(name)
    probe = getattr(spec, "validation_probe", None)
    findings = getattr(spec, "validation_findings", None)
    sample_data = getattr(spec, "PROBE_EVENT", None)
    if probe is None or findings is None or sample_data is None:
        return
    from backchannel.credentials import load_cipher
    from backchannel.events import normalize
    from backchannel.targets import Targets

    try:
        target = (
            Targets(settings, store, load_cipher(settings, create=False), None).resolve(name).target
        )
        sample = normalize(sample_data, now=time.time()).conversion
        request = probe(target, sample)
        response = client.post(request.url, content=request.content, headers=request.headers)
    except Exception as exc:  # doctor reports, it never crashes
        report.add(f"validation {name}", False, f"could not ask: {type(exc).__name__}")
        return
    found = findings(response.status_code, response.content)
    if found:
        report.add(
            f"validation {name}",
            False,
            f"{spec.display_name}'s validation server would drop a sample event: "
            + "; ".join(found),
            "check the connection's ids and the event mapping; the production endpoint"
            " says nothing when it drops events",
        )
    else:
        report.add(
            f"validation {name}", True, f"{spec.display_name}'s validation server takes a sample"
        )


def run(
    *,
    live: bool = False,
    load: Callable[[], config.Settings] = config.load,
    http: httpx.Client | None = None,
    clock: Callable[[], float] = time.time,
) -> Report:
    report = Report()
    try:
        settings = load()
    except config.ConfigError as exc:
        report.add(
            "configuration",
            False,
            str(exc),
            "correct that setting in backchannel.toml or its BACKCHANNEL_* variable",
        )
        return report
    report.add("configuration", True, "loaded")

    # -- database -------------------------------------------------------------------------------
    store: Store | None = None
    backend: migrations.Backend = (
        "sqlite" if settings.database_url.startswith("sqlite") else "postgres"
    )
    latest = max(v for v, _ in migrations.load(backend))
    shown = logs.safe_url(settings.database_url)
    try:
        version = _schema_version(settings.database_url)
    except Exception as exc:
        report.add(
            "database",
            False,
            f"{shown}: {type(exc).__name__}: {logs.safe_url(str(exc)).splitlines()[0]}",
            f"pip install 'backchannel[{exc.extra}]'"
            if isinstance(exc, MissingExtra)
            else "check BACKCHANNEL_DATABASE_URL, that the server runs and accepts this user;"
            " for a new SQLite file run `backchannel migrate`",
        )
    else:
        if version < latest:
            report.add(
                "database",
                False,
                f"{shown}: schema at migration {version}, this version ships {latest}",
                "run `backchannel migrate` (serve also migrates when it starts)",
            )
        else:
            report.add("database", True, f"{shown}: reachable, migrations current ({version})")
            try:
                store = open_store(settings.database_url)
            except Exception as exc:
                report.add("database", False, f"cannot open: {type(exc).__name__}")

    # -- key and tokens ---------------------------------------------------------------------------
    cipher = None
    if settings.secret_key:
        try:
            cipher = credentials.load_cipher(settings, create=False)
            report.add("encryption key", True, "from BACKCHANNEL_SECRET_KEY")
        except credentials.SecretError as exc:
            report.add(
                "encryption key",
                False,
                str(exc),
                "set BACKCHANNEL_SECRET_KEY to a key made by `Fernet.generate_key()`",
            )
    else:
        path = Path(settings.key_file)
        if not path.exists():
            report.add(
                "encryption key",
                False,
                f"{path} does not exist",
                "start `backchannel serve` once (it creates the key), or set"
                " BACKCHANNEL_SECRET_KEY; if tokens were stored, restore the old key file",
            )
        else:
            mode = path.stat().st_mode & 0o777
            try:
                cipher = credentials.load_cipher(settings, create=False)
            except credentials.SecretError as exc:
                fix = f"chmod 600 {path}" if mode & 0o077 else "restore the key file"
                report.add("encryption key", False, str(exc), fix)
            else:
                report.add("encryption key", True, f"{path} (mode {mode:o})")
    if store is None:
        report.add("tokens", None, "not checked: no database")
    elif cipher is None:
        report.add("tokens", None, "not checked: no usable key")
    else:
        stored = store.all_ciphertexts()
        if not stored:
            report.add("tokens", True, "none stored (destinations use the sandbox)")
        for label, ciphertext in stored:
            kind, _, name = label.partition(" ")
            again = store_again(store, kind, name)
            try:
                credentials.decrypt(cipher, ciphertext)
            except credentials.SecretError:
                report.add(
                    label,
                    False,
                    "does not decrypt with the configured key",
                    "restore the key it was stored with (in BACKCHANNEL_SECRET_KEY or the key"
                    f" file), or store it again: `{again}`",
                )
            else:
                report.add(label, True, "decrypts")

    # -- dashboard and routing (informational: neither stops delivery) -----------------------
    if store is not None:
        from backchannel import members, routing

        team = members.active_members(store)
        if not team:
            report.add(
                "dashboard",
                None,
                "no member: nobody can log in to /admin; set the first password with"
                " `backchannel admin set-password`",
            )
        else:
            owners = sum(1 for m in team if members.is_host_owner(m.grants))
            report.add(
                "dashboard",
                True,
                f"{len(team)} member(s), {owners} owner(s) of every property",
            )
        names_of = {p.id: p.name for p in store.properties()}
        limited = {
            qualified_name(c.property_id, names_of.get(c.property_id, ""), c.name): sorted(events)
            for c in routing.active_connections(store, settings.destinations)
            if (events := routing.parse(c.routes)) is not None
        }
        report.add(
            "routing",
            None if limited else True,
            "; ".join(f"{name}: only {routing.describe(ev)}" for name, ev in limited.items())
            if limited
            else "every event goes to every destination",
        )

    # -- destinations and clock ------------------------------------------------------------
    owned = http is None
    client = http or httpx.Client(timeout=HTTP_TIMEOUT)
    skews: list[tuple[str, float]] = []
    try:
        names = (
            routing.active_destinations(store, settings.destinations)
            if store is not None
            else settings.destinations
        )
        for name in names:
            configured = settings.base_url_for(name)
            default = registry.get(name).DEFAULT_BASE_URL
            has_token = False
            if store is not None:  # live in any property: the platform must be reachable
                has_token = any(
                    c.live
                    for c in routing.active_connections(store, settings.destinations)
                    if c.destination == name
                )
            url = configured or (default if has_token else None)
            if url is None:
                report.add(
                    f"destination {name}",
                    None,
                    "embedded sandbox (inside `serve`): nothing to reach",
                )
                continue
            if url.rstrip("/") == default and not live:
                report.add(
                    f"destination {name}",
                    None,
                    f"{url}: the real platform; checked only with --live",
                )
                continue
            started = time.perf_counter()
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                report.add(
                    f"destination {name}",
                    False,
                    f"{url}: {type(exc).__name__}",
                    f"is it running and reachable from here? check BACKCHANNEL_{name.upper()}"
                    "_BASE_URL, DNS, firewall and proxy settings",
                )
                continue
            elapsed = time.perf_counter() - started
            leg = "sandbox" if not has_token else "live"
            report.add(
                f"destination {name}",
                True,
                f"{url} ({leg}): answered HTTP {response.status_code} in {elapsed * 1000:.0f} ms",
            )
            if store is not None:
                _validate(report, client, name, settings, store)
            date = response.headers.get("date")
            if date:
                try:
                    server_time = email.utils.parsedate_to_datetime(date).timestamp()
                except (TypeError, ValueError):
                    continue
                # The Date header is whole seconds, taken somewhere during the round trip.
                skews.append((name, clock() - elapsed / 2 - server_time))
    finally:
        if owned:
            client.close()
        if store is not None:
            store.close()
    if not skews:
        report.add("clock", None, "not checked: no destination answered with a Date header")
    else:
        name, skew = max(skews, key=lambda item: abs(item[1]))
        if abs(skew) > MAX_SKEW:
            report.add(
                "clock",
                False,
                f"{skew:+.0f} s against {name}",
                "synchronize this machine's clock (NTP: systemd-timesyncd, chrony)",
            )
        else:
            report.add("clock", True, f"within {MAX_SKEW:.0f} s of {name} ({skew:+.1f} s)")
    return report


def store_again(store: Store, kind: str, name: str) -> str:
    """The command that stores a secret again: ``token set``/``source set`` for the default
    property's (``name`` is the label or source), with --property (and --connection) for
    another's (``name`` is ``property/label``)."""
    owner, _, label = name.rpartition("/")
    if kind != "token" and kind != "secrets":
        return f"backchannel source set {label}" + (f" --property {owner}" if owner else "")
    if not owner:
        connection = store.get_connection(label)
        destination = connection.destination if connection is not None else label
        flags = f" --connection {label}" if destination != label else ""
        return f"backchannel token set {destination}{flags}"
    prop = store.get_property(owner)
    connection = store.get_connection(label, prop.id) if prop is not None else None
    destination = connection.destination if connection is not None else label
    flags = f" --connection {label}" if destination != label else ""
    return f"backchannel token set {destination} --property {owner}{flags}"
