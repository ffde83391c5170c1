"""Shared by the benchmark scripts: replace one marked block of docs/benchmarks.md."""

from __future__ import annotations

import sys
from pathlib import Path


def write_markdown_block(path: Path, name: str, script: str, lines: list[str]) -> None:
    """Put ``lines`` (a markdown table) and the command that made them between the
    ``<!-- name:start -->`` / ``<!-- name:end -->`` markers of ``path``, or append them."""
    command = f"python benchmarks/{script} " + " ".join(sys.argv[1:])
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = "\n".join([start, f"Command: `{command}`", "", *lines, end])
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
