"""Shared by the benchmark scripts: memory readings, AUC, and one marked block of docs/benchmarks.md."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def rss_mb() -> float:
    """This process's resident memory now, MB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    """This process's peak resident memory, MB. VmHWM, not ru_maxrss: ru_maxrss survives exec,
    so a child would report the parent's peak."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def auc(y, p) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


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
