"""Print the ``--help`` of every ``backchannel`` command and subcommand, one after the other.

Why: the CLI was split from one module into a package; its help is its user interface, so
the split (and any later move of a command between modules) must leave every line of it
unchanged. ``tests/install/cli_help.txt`` is this script's output, saved before the split;
``test_cli_help.py`` compares the current output with it. Regenerate it deliberately, after a
wanted change of a command's help:

    .venv/bin/python tests/install/dump_help.py > tests/install/cli_help.txt

The help is rendered in this process with a fixed width and no colour, so the output does
not depend on the terminal that runs it.
"""

from __future__ import annotations

import os

WIDTH = "100"


def command_paths(command: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path (``()``, ``("keys",)``, ``("keys", "create")``, …), sorted."""
    paths = [prefix]
    # duck-typed: typer 0.29 carries its own copy of click, so isinstance(click.Group) fails
    children: dict[str, object] = getattr(command, "commands", {})
    for name in sorted(children):
        paths.extend(command_paths(children[name], (*prefix, name)))
    return paths


def dump() -> str:
    """The help of every command, each under a ``=== backchannel …`` header line."""
    os.environ["COLUMNS"] = WIDTH  # rich sizes its panels from COLUMNS when not a terminal
    os.environ["TERMINAL_WIDTH"] = WIDTH
    os.environ["NO_COLOR"] = "1"
    import typer.main
    from typer.testing import CliRunner

    from backchannel.cli import app

    runner = CliRunner()
    parts = []
    for path in command_paths(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "--help"], prog_name="backchannel", color=False)
        header = " ".join(("backchannel", *path))
        # trailing blanks (rich pads every line to the width) carry nothing and vex editors
        text = "\n".join(line.rstrip() for line in result.output.splitlines())
        parts.append(f"=== {header} (exit {result.exit_code})\n{text}\n")
    return "".join(parts)


if __name__ == "__main__":
    print(dump(), end="")
