"""``backchannel member`` and the member side of ``admin set-password`` and ``keys``: the real
CLI as subprocesses on one SQLite file, with what it stored read back through the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from backchannel.passwords import verify_password
from backchannel.store import open_store
from backchannel.store.base import Grant, Member

from .test_cli import Cli, assert_clean_failure, cli

__all__ = ["cli"]  # the fixture, used by name below

ALICE_PW = "alice's long password"
BOB_PW = "bob's long password!"


def member(run: Cli, name: str) -> Member | None:
    store = open_store(run.database_url)
    try:
        return store.member_by_name(name)
    finally:
        store.close()


def audit(run: Cli) -> list[tuple[str, str, str]]:
    store = open_store(run.database_url)
    try:
        return [
            (str(a), str(b), str(c))
            for a, b, c in store.read(
                "SELECT actor, action, detail FROM audit_log WHERE action LIKE 'member.%'"
                " ORDER BY id"
            )
        ]
    finally:
        store.close()


class TestMemberCommands:
    def test_add_list_role_remove(self, cli: Cli) -> None:
        """add reads the password from stdin; list shows roles (never a hash); role changes
        one property's role; remove takes the access away; each is audited as cli."""
        added = cli("member", "add", "Alice", "--role", "owner", "--all", stdin=ALICE_PW + "\n")
        assert added.returncode == 0, added.stderr
        assert added.stdout == "alice: owner of every property\n"
        bob = cli("member", "add", "bob", "--role", "viewer", stdin=BOB_PW + "\n")
        assert bob.stdout == "bob: viewer of default\n"
        stored = member(cli, "alice")
        assert stored is not None
        assert stored.grants == (Grant(None, "owner"),)
        assert verify_password(ALICE_PW, stored.password_hash)

        listed = cli("member", "list")
        assert listed.stdout == (
            "alice\towner of every property\tactive\nbob\tviewer of default\tactive\n"
        )
        assert "scrypt" not in listed.stdout

        changed = cli("member", "role", "bob", "--role", "editor", "--property", "default")
        assert changed.stdout == "bob: editor of default (was viewer)\n"
        host = cli("member", "role", "bob", "--role", "viewer", "--all")
        assert host.stdout == "bob: viewer of every property\n"
        taken = cli("member", "role", "bob", "--role", "none")
        assert taken.stdout == "bob: no role on default (was editor)\n"
        removed = cli("member", "remove", "bob")
        assert removed.stdout == "bob removed; 0 session(s) logged out\n"
        assert "bob\tno role\tremoved" in cli("member", "list").stdout
        assert audit(cli) == [
            ("cli", "member.add", "alice: owner of every property"),
            ("cli", "member.add", "bob: viewer of default"),
            ("cli", "member.role", "bob: editor of default (was viewer)"),
            ("cli", "member.role", "bob: viewer of every property"),
            ("cli", "member.role", "bob: no role on default (was editor)"),
            ("cli", "member.remove", "bob (viewer of every property); 0 session(s) ended"),
        ]

    @pytest.mark.parametrize(
        ("args", "stdin", "message"),
        [
            (("add", "kim", "--role", "god"), ALICE_PW, "error: --role: must be owner, editor"),
            (("add", "k m", "--role", "viewer"), ALICE_PW, "error: name: letters, digits"),
            (("add", "kim", "--role", "viewer"), "short\n", "error: password: must be at least"),
            (("add", "kim", "--role", "viewer"), "\n", "error: password: must be at least"),
            (
                ("add", "kim", "--role", "viewer", "--property", "eu"),
                ALICE_PW,
                "error: --property: no property named 'eu'",
            ),
            (
                ("add", "kim", "--role", "viewer", "--property", "default", "--all"),
                ALICE_PW,
                "error: --all: give either --property NAME or --all, not both",
            ),
            (("role", "kim", "--role", "viewer"), "", "error: name: no member named 'kim'"),
            (("role", "alice", "--role", "boss"), "", "error: --role: must be owner, editor"),
        ],
    )
    def test_bad_input_is_one_line_naming_the_field(
        self, cli: Cli, args: tuple[str, ...], stdin: str, message: str
    ) -> None:
        cli("member", "add", "alice", "--role", "owner", "--all", stdin=ALICE_PW + "\n")
        result = cli("member", *args, stdin=stdin if stdin.endswith("\n") else stdin + "\n")
        code = 1 if "no member named" in message else 2
        assert_clean_failure(result, code)
        assert result.stderr.startswith(message), result.stderr
        assert member(cli, "kim") is None

    def test_a_taken_name_is_refused(self, cli: Cli) -> None:
        cli("member", "add", "alice", "--role", "owner", "--all", stdin=ALICE_PW + "\n")
        again = cli("member", "add", "ALICE", "--role", "viewer", stdin=BOB_PW + "\n")
        assert_clean_failure(again)
        assert "name: a member named 'alice' exists" in again.stderr
        stored = member(cli, "alice")
        assert stored is not None
        assert verify_password(ALICE_PW, stored.password_hash)

    def test_the_last_host_owner_stays(self, cli: Cli) -> None:
        """The only owner of every property can be neither removed nor demoted."""
        cli("member", "add", "alice", "--role", "owner", "--all", stdin=ALICE_PW + "\n")
        for args in (("remove", "alice"), ("role", "alice", "--role", "viewer", "--all")):
            result = cli("member", *args)
            assert_clean_failure(result)
            assert "alice is the only owner of every property" in result.stderr
        cli("member", "add", "bob", "--role", "owner", "--all", stdin=BOB_PW + "\n")
        assert cli("member", "remove", "alice").returncode == 0  # bob stays owner

    def test_the_password_is_never_an_argument(self, cli: Cli) -> None:
        """There is no option to pass a password: an extra argument is a usage error."""
        result = cli("member", "add", "kim", ALICE_PW, "--role", "viewer")
        assert result.returncode == 2
        assert member(cli, "kim") is None


class TestSetPassword:
    def test_first_password_makes_the_host_owner_then_sets_the_one_members(self, cli: Cli) -> None:
        """No member: `admin set-password` makes `admin`, owner of every property. One
        member: its password. Several: `--member NAME` is needed."""
        first = cli("admin", "set-password", stdin=ALICE_PW + "\n")
        assert first.stdout == "password of admin set; 0 session(s) logged out\n"
        admin = member(cli, "admin")
        assert admin is not None
        assert admin.grants == (Grant(None, "owner"),)
        again = cli("admin", "set-password", stdin=BOB_PW + "\n")
        assert again.returncode == 0, again.stderr
        admin = member(cli, "admin")
        assert admin is not None
        assert verify_password(BOB_PW, admin.password_hash)

        cli("member", "add", "carol", "--role", "viewer", stdin=ALICE_PW + "\n")
        ambiguous = cli("admin", "set-password", stdin="carol's new password\n")
        assert_clean_failure(ambiguous)
        assert "--member: there are several members (admin, carol); name one" in ambiguous.stderr
        named = cli("admin", "set-password", "--member", "carol", stdin="carol's new password\n")
        assert named.stdout == "password of carol set; 0 session(s) logged out\n"
        carol = member(cli, "carol")
        assert carol is not None
        assert verify_password("carol's new password", carol.password_hash)
        unknown = cli("admin", "set-password", "--member", "dan", stdin="dan's long password\n")
        assert_clean_failure(unknown, 1)


class TestAdminKeyRoles:
    def test_an_admin_key_has_a_role(self, cli: Cli, tmp_path: Path) -> None:
        """`keys create --scope admin` makes an owner unless --role says otherwise; the list
        shows it; a role on another scope is refused."""
        cli("keys", "create", "--name", "ops", "--scope", "admin")
        cli("keys", "create", "--name", "reader", "--scope", "admin", "--role", "viewer")
        cli("keys", "create", "--name", "shop")
        lines = cli("keys", "list").stdout.splitlines()
        assert [line.split("\t")[1:3] for line in lines] == [
            ["ops", "admin (owner)"],
            ["reader", "admin (viewer)"],
            ["shop", "ingest"],
        ]
        wrong = cli("keys", "create", "--name", "x", "--role", "viewer")
        assert_clean_failure(wrong)
        assert wrong.stderr.startswith("error: --role: only an admin key has a role")
        bad = cli("keys", "create", "--name", "x", "--scope", "admin", "--role", "root")
        assert_clean_failure(bad)
        assert bad.stderr.startswith("error: --role: must be owner, editor, viewer")
