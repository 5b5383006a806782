"""``mine-backend keys ACTION``: the backend's keys. The archive key's actions live in
:mod:`backend.cli.archive_keys`."""

from __future__ import annotations

__all__ = ["ACTIONS", "add_arguments", "main"]

import argparse

from agent.core import command_line
from backend.cli.archive_keys import ARCHIVE_ACTIONS

ACTIONS: command_line.Actions = {**ARCHIVE_ACTIONS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    command_line.add_actions(parser, ACTIONS)


def main(args: argparse.Namespace) -> int:
    return command_line.run_action(ACTIONS, args)
