"""Atomic file writes: temp file in the target directory, fsync, ``os.replace``.

A reader never sees a half-written file: either the old content or the new one. A
``<name>.sha256`` sidecar lets a loader tell a damaged file from a good one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from fusionrec.errors import FusionrecError


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, checksum: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; with ``checksum`` also write ``path.sha256``."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FusionrecError(f"cannot write {path}: directory {directory} does not exist")
    _replace_atomically(path, data)
    if checksum:
        digest = hashlib.sha256(data).hexdigest()
        _replace_atomically(sidecar_path(path), f"{digest}  {path.name}\n".encode())
    return path


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_sidecar_digest(path: Path) -> str | None:
    """The digest recorded beside ``path``, or None when there is no sidecar."""
    sidecar = sidecar_path(path)
    if not sidecar.exists():
        return None
    text = sidecar.read_text(errors="replace").strip()
    return text.split()[0] if text else ""


def _replace_atomically(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
