"""The ``backchannel`` command line, assembled from one module per command group.

Why here and in this order: the root help lists commands in the order they are registered,
and that order (and every command's help) is pinned by ``tests/install/cli_help.txt``.
Command bodies live in their group's module; this module only names them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from backchannel import __version__
from backchannel.cli import (
    admin,
    backfill,
    backups,
    keys,
    members,
    outbox,
    properties,
    report,
    route,
    send,
    serve,
    snippet,
    sources,
    token,
    upkeep,
)

app = typer.Typer(
    name="backchannel",
    help="Server-side conversion tracking for TikTok's Events API and Meta's Conversions API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit(0)


app.command()(send.send)
app.command()(serve.serve)
app.command()(serve.worker)
app.command()(serve.sandbox)
app.command()(outbox.replay)
app.command()(backfill.backfill)
app.command()(serve.migrate)
app.command()(outbox.status)
app.command("import")(sources.import_csv)
app.command()(upkeep.doctor)
app.command()(backups.backup)
app.command()(backups.restore)
app.command()(upkeep.purge)
app.add_typer(properties.property_app, name="property")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(token.token_app, name="token")
app.add_typer(route.route_app, name="route")
app.add_typer(sources.source_app, name="source")
app.add_typer(admin.admin_app, name="admin")
app.add_typer(members.member_app, name="member")
app.add_typer(report.report_app, name="report")
app.add_typer(snippet.snippet_app, name="snippet")


def main() -> None:
    app()
