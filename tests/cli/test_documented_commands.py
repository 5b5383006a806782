"""Every ``mine-agent ...`` and ``mine-backend ...`` command line shown to a reader parses with that program's
own argument parser.

Technicians copy these lines from the README, the docs, the driver READMEs and the installer's messages; a
line the parser refuses is a command that fails in the field (``validate --config FILE`` did). Lines are taken
from code (fenced or indented blocks, inline code spans with arguments, the installer's ``say`` lines); usage
synopses (``[--opt]``, ``<url>``, ``...``) describe rather than run, and are left to the commands' own --help.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path
from typing import NoReturn

import pytest

from agent.cli import COMMANDS as AGENT_COMMANDS
from backend.cli import COMMANDS as BACKEND_COMMANDS

PROGRAMS = {"mine-agent": AGENT_COMMANDS, "mine-backend": BACKEND_COMMANDS}
ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "drivers").glob("*/README.md")),
    *sorted((ROOT / "config").rglob("*.md")),
]
SCRIPTS = [ROOT / "systemd" / "install.sh"]

_SYNOPSIS = re.compile(r"\[|<|\.\.\.|\|")
_SPAN = re.compile(r"`((?:mine-agent|mine-backend) [^`]+)`")


class _Refused(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Refused(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _Refused(message or f"exit {status}")


def _command_at(text: str) -> str | None:
    """The ``mine-agent``/``mine-backend`` command a line of code shows, without prompt, sudo or trailing comment;
    None when the name there is not a command (a unit name in ``journalctl -u mine-agent``, a placeholder)."""
    found = [(at, prog) for prog in PROGRAMS if (at := text.find(prog + " ")) >= 0]
    if not found:
        return None
    at, prog = min(found)
    if at > 0 and text[at - 1] not in " $'\"(":
        return None
    command = re.split(r"\s+#\s", text[at:], maxsplit=1)[0].rstrip()
    words = command.split()
    if len(words) < 2 or words[1] not in PROGRAMS[prog]:
        return None
    return command


def _runs_something(span: str) -> bool:
    """An inline span that shows arguments (an option, a path, a URL, a pattern) is a command to run; one of
    plain words (`mine-backend config push`) names a command in prose."""
    return any(word.startswith("-") or any(c in word for c in "/.:=*'") for word in span.split()[2:])


def documented_commands() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        fenced = False
        i = 0
        while i < len(lines):
            line = lines[i]
            where = f"{path.relative_to(ROOT)}:{i + 1}"
            if line.lstrip().startswith("```"):
                fenced = not fenced
            elif (fenced or line.startswith("    ")) and "`" not in line:
                # a code line; a trailing backslash continues it
                while line.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    line = line[:-1] + " " + lines[i].strip()
                command = _command_at(line)
                if command and not _SYNOPSIS.search(command):
                    found.append((where, command))
            else:
                for span in _SPAN.findall(line):
                    command = _command_at(span)
                    if command and _runs_something(command) and not _SYNOPSIS.search(command):
                        found.append((where, command))
            i += 1
    for path in SCRIPTS:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith(("say ", "echo ", "printf ")):
                command = _command_at(line.replace("$PREFIX", "/opt/mine-agent"))
                if command and not _SYNOPSIS.search(command) and "$" not in command:
                    found.append((f"{path.relative_to(ROOT)}:{n}", command.rstrip("'\"")))
    return found


def parse(command: str) -> argparse.Namespace:
    try:
        program, *argv = shlex.split(command)
    except ValueError as exc:
        raise _Refused(f"not a shell command line: {exc}") from exc
    commands = PROGRAMS[program]
    if not argv or argv[0] not in commands:
        raise _Refused(f"no such command {argv[:1]}")
    name = argv[0]
    module = importlib.import_module(commands[name][0])
    parser = _Parser(prog=f"{program} {name}")
    module.add_arguments(parser)
    return parser.parse_args(argv[1:])


COMMANDS_SHOWN = documented_commands()


def test_the_docs_show_commands() -> None:
    # The extraction finds the commands the README walks through; an empty list would pass every test below.
    shown = {" ".join(command.split()[:2]) for _, command in COMMANDS_SHOWN}
    assert {"mine-agent validate", "mine-agent keys", "mine-agent status", "mine-backend receive"} <= shown


@pytest.mark.parametrize(("where", "command"), COMMANDS_SHOWN, ids=[w for w, _ in COMMANDS_SHOWN])
def test_documented_command_parses(where: str, command: str) -> None:
    try:
        parse(command)
    except _Refused as exc:
        pytest.fail(f"{where}: `{command}` is refused by the CLI: {exc}")


def test_a_wrong_command_is_refused() -> None:
    with pytest.raises(_Refused):
        parse("mine-agent validate --config agent.toml")
    with pytest.raises(_Refused):
        parse("mine-agent receive --db r.sqlite --report")  # the backend's command
