"""What commands with ``--json FILE`` print: the JSON to the file (and a line saying so), or,
without ``--json``, the JSON itself on stdout, so the output pipes into ``jq``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand


def write_json(command: BaseCommand, data: Any, path: Path | None, *, verbosity: int, summary: str,
               sort_keys: bool = False) -> None:
    """``data`` as indented UTF-8 JSON into ``path`` (its folder created), then ``summary``
    ("wrote 12 pairs to FILE") at ``verbosity`` 1 and above; with no ``path``, to stdout."""
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=sort_keys) + "\n"
    if path is None:
        command.stdout.write(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if verbosity >= 1:
        command.stdout.write(summary)
