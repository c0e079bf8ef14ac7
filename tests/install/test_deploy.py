"""The deployment files name only commands, options and settings that exist.

Why: compose.yaml, the Containerfile and the systemd unit are text that nothing runs in the
test suite (no container engine or init system to start them here), so a renamed option or
a misspelt BACKCHANNEL_ variable would only show in production. Every ``backchannel``
invocation they contain is checked against the real CLI's ``--help`` (the command path exits
0 and lists every ``--option`` used), and every BACKCHANNEL_* variable against config.py's
settings, with its value loaded by ``config.load`` (so a bad value fails too). The unit is
checked by ``systemd-analyze verify`` and ``security`` when systemd-analyze is installed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from backchannel import config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
CONTAINERFILE = ROOT / "Containerfile"
UNIT = ROOT / "deploy" / "backchannel.service"
IMAGE_ENTRYPOINT = "backchannel"
VARIABLE = re.compile(r"\bBACKCHANNEL_[A-Z0-9_]+")
#: `backchannel keys create --name shop` in a comment (not a path or the image's name)
COMMENTED = re.compile(
    r"(?:(?<![\w/.-])|(?<=bin/))backchannel((?: [a-z][\w-]*)+(?: --?[\w-]+| [\w-]+)*)"
)


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return document


def our_services() -> dict[str, dict[str, Any]]:
    """The services that run the Backchannel image (its entrypoint is `backchannel`)."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("image", "").startswith("localhost/backchannel")
    }


def containerfile_json(instruction: str) -> list[str]:
    """The exec-form (JSON) arguments of the last ``instruction`` line of the Containerfile."""
    import json

    lines = [
        line for line in CONTAINERFILE.read_text().splitlines() if line.startswith(instruction)
    ]
    assert lines, instruction
    value: list[str] = json.loads(lines[-1][len(instruction) :].strip())
    return value


def unit_values(key: str) -> list[str]:
    prefix = key + "="
    return [
        line[len(prefix) :] for line in UNIT.read_text().splitlines() if line.startswith(prefix)
    ]


def invocations() -> list[tuple[str, list[str]]]:
    """Every ``backchannel`` argument list in the deployment files, with where it is."""
    found = [(f"compose {name}", list(s["command"])) for name, s in our_services().items()]
    assert containerfile_json("ENTRYPOINT") == [IMAGE_ENTRYPOINT]
    found.append(("Containerfile CMD", containerfile_json("CMD")))
    for line in unit_values("ExecStart"):
        program, *args = shlex.split(line)
        assert program.endswith("/backchannel"), line
        found.append(("backchannel.service", args))
    for path in (COMPOSE, CONTAINERFILE, UNIT):  # commands named in their comments
        for match in COMMENTED.finditer(path.read_text()):
            found.append((f"{path.name} comment", match.group(1).split()))
    return found


def help_of(path: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
    env["COLUMNS"] = "200"
    completed = subprocess.run(
        [sys.executable, "-m", "backchannel.cli", *path, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, (path, completed.stderr)
    return completed.stdout


class TestCompose:
    def test_the_topology(self) -> None:
        services = compose()["services"]
        assert services["postgres"]["image"].endswith("postgres:16")
        ours = our_services()
        commands = {name: s["command"] for name, s in ours.items()}
        assert commands["migrate"] == ["migrate"]
        nodes = [n for n, c in commands.items() if c[0] == "serve"]
        workers = [n for n, c in commands.items() if c[0] == "worker"]
        assert len(nodes) == 2
        assert len(workers) == 2
        for name in nodes:
            assert "--no-worker" in commands[name]
        published = [ours[n]["ports"][0].split(":")[0] for n in nodes]
        assert len(set(published)) == 2  # each node behind nothing but its own port

    def test_health_checks_restart_policies_and_order(self) -> None:
        services = compose()["services"]
        for name, service in services.items():
            if name == "migrate":  # a one-shot: runs once, never restarted
                assert service["restart"] == "no"
                assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
                continue
            assert service["restart"] in ("unless-stopped", "always", "on-failure"), name
            if service.get("command", [""])[0] != "serve":  # serve: the image's HEALTHCHECK
                assert service["healthcheck"]["test"][0] == "CMD", name
        for name, service in our_services().items():
            if name in ("migrate", "sandbox"):
                continue
            assert service["depends_on"]["migrate"]["condition"] == (
                "service_completed_successfully"
            )
        assert "healthz" in compose()["services"]["worker1"]["healthcheck"]["test"][-1]

    def test_one_secret_key_and_one_database_for_every_process(self) -> None:
        environments = [s["environment"] for s in our_services().values()]
        assert all(e == environments[0] for e in environments)
        assert environments[0]["BACKCHANNEL_DATABASE_URL"].startswith("postgresql://")
        assert "BACKCHANNEL_SECRET_KEY" in environments[0]


class TestContainerfile:
    def test_multi_stage_non_root_healthcheck_volume(self) -> None:
        text = CONTAINERFILE.read_text()
        assert len(re.findall(r"^FROM ", text, re.M)) >= 2
        assert "slim" in re.search(r"^ARG BASE=(.+)$", text, re.M).group(1)  # type: ignore[union-attr]
        users = re.findall(r"^USER (\S+)", text, re.M)
        assert users
        assert users[-1] not in ("root", "0")
        healthcheck = text[text.index("HEALTHCHECK ") :].split("\n", 2)
        assert healthcheck[0].startswith("HEALTHCHECK --interval=")
        assert "/healthz" in healthcheck[1]
        assert re.search(r"^VOLUME \[\"/var/lib/backchannel\"\]", text, re.M)
        assert "backchannel-*.whl" in text  # the wheel is what is installed
        assert "BACKCHANNEL_KEY_FILE=/var/lib/backchannel/" in text
        assert "BACKCHANNEL_DATABASE_URL=sqlite:////var/lib/backchannel/" in text


class TestNamesExist:
    def test_every_command_and_option_exists_in_the_cli(self) -> None:
        helps: dict[tuple[str, ...], str] = {}
        checked = 0
        for where, args in invocations():
            options = [a.split("=")[0] for a in args if a.startswith("--")]
            # the command path is the leading words; the rest are option values
            words = []
            for arg in args:
                if arg.startswith("-"):
                    break
                words.append(arg)
            assert words, (where, args)
            key = tuple(words)
            if key not in helps:
                helps[key] = help_of(words)
            for option in options:
                assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", helps[key]), (
                    f"{where}: `backchannel {' '.join(words)}` has no option {option}"
                )
            checked += 1
        assert checked >= 8

    def test_every_backchannel_variable_is_a_setting_and_loads(self, tmp_path: Path) -> None:
        known = {"BACKCHANNEL_" + f.name.upper() for f in fields(config.Settings)} - {
            "BACKCHANNEL_EXTRA"
        }
        known.add("BACKCHANNEL_CONFIG")  # the settings file's path
        values: dict[str, str] = {}
        for _, service in our_services().items():
            values.update(service["environment"])
        for line in re.findall(r"^ENV (.*?)(?=^\S)", CONTAINERFILE.read_text(), re.M | re.S):
            for name, value in re.findall(r"(BACKCHANNEL_\w+)=(\S+)", line):
                values[name] = value
        for line in unit_values("Environment"):
            name, value = line.split("=", 1)
            values[name] = value
        mentioned = set()
        for path in (COMPOSE, CONTAINERFILE, UNIT):
            mentioned |= set(VARIABLE.findall(path.read_text()))
        unknown = sorted(mentioned - known)
        assert not unknown, f"not settings in config.py: {unknown}"
        assert len(values) >= 6
        # compose interpolations get a value of the right shape, then config.load checks all
        filled = {name: re.sub(r"\$\{[^}]+\}", "x", value) for name, value in values.items()}
        from cryptography.fernet import Fernet

        filled["BACKCHANNEL_SECRET_KEY"] = Fernet.generate_key().decode()
        settings = config.load(env=filled, config_path=tmp_path / "none.toml")
        assert settings.log_format == "json"


class TestSystemdUnit:
    def test_hardening_options_are_set(self) -> None:
        text = UNIT.read_text()
        for option in (
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/backchannel",
            "PrivateTmp=yes",
            "ProtectHome=yes",
            "CapabilityBoundingSet=\n",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "SystemCallFilter=@system-service",
        ):
            assert option in text, option
        assert unit_values("User") == ["backchannel"]

    @pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
    def test_systemd_analyze_verify_and_security(self, tmp_path: Path) -> None:
        """verify: the unit parses and its ExecStart is executable (pointed at this
        installation's script, as /opt/backchannel does not exist here); security: the
        exposure score stays at or below 2.0 (systemd calls under 3 'OK')."""
        script = Path(sys.executable).parent / "backchannel"
        assert script.exists()
        unit = tmp_path / "backchannel.service"
        unit.write_text(UNIT.read_text().replace("/opt/backchannel/bin/backchannel", str(script)))
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(unit)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stderr
        assert verify.stderr.strip() == "", verify.stderr
        security = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(unit)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert security.returncode == 0, security.stdout[-2000:]
