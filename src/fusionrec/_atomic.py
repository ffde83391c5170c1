"""Atomic file writes: temp file in the target directory, fsync, ``os.replace``.

A reader never sees a half-written file: either the old content or the new one. A
``<name>.sha256`` sidecar lets a loader tell a damaged file from a good one.

The file and its sidecar cannot be replaced in one step, so a save is three atomic steps,
each leaving a pair that verifies (a process killed at any point leaves a loadable file):

1. the sidecar lists the digests of the current file *and* of the new content;
2. the file is replaced by the new content;
3. the sidecar lists the new digest only.

A loader accepts the file when its digest is any of those listed (``verify_sidecar``). Each
line is ``<sha256>  <name>``, as ``sha256sum`` writes; between steps 1 and 3 there are two.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from fusionrec.errors import FusionrecError


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, checksum: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; with ``checksum`` also keep ``path.sha256`` in step."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FusionrecError(f"cannot write {path}: directory {directory} does not exist")
    try:
        if not checksum:
            _replace_atomically(path, data)
            return path
        new_digest = hashlib.sha256(data).hexdigest()
        old_digest = _file_digest(path)
        old_listed = read_sidecar_digests(path)
        if old_listed is not None and old_digest not in old_listed:
            old_digest = None  # the current file is already damaged: never vouch for it
        if old_digest is not None and old_digest != new_digest:
            _replace_atomically(sidecar_path(path), _sidecar_text([old_digest, new_digest], path.name))
        else:
            _replace_atomically(sidecar_path(path), _sidecar_text([new_digest], path.name))
        _replace_atomically(path, data)
        _replace_atomically(sidecar_path(path), _sidecar_text([new_digest], path.name))
    except OSError as error:  # disk full, read-only directory, ...: name the file, keep the old one
        raise FusionrecError(f"cannot write {path}: {error.strerror or error}; the previous file, if any, is intact") from None
    return path


def check_writable_dir(directory: str | os.PathLike, what: str, *, given: str | os.PathLike | None = None) -> Path:
    """Make ``directory`` (and its parents) and prove a file can be written in it, or raise one
    line naming ``what``, the path and the reason. Run before long work whose output goes there:
    a bad path is found in a second, not after the training."""
    directory = Path(directory)
    blocker = next((p for p in [directory, *directory.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise FusionrecError(f"{what} {str(given or directory)!r}: {str(blocker)!r} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".fusionrec-write-check-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        where = f"cannot write in {str(directory)!r}" if given else "cannot write there"
        raise FusionrecError(f"{what} {str(given or directory)!r}: {where} ({error.strerror or error})") from None
    return directory


def check_writable_file(path: str | os.PathLike, what: str) -> Path:
    """``check_writable_dir`` of the directory a file will be written into; an existing directory
    where the file goes is refused too."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise FusionrecError(f"{what} {str(path)!r}: is a directory; give a file path")
    check_writable_dir(path.parent if str(path.parent) else Path("."), what, given=path)
    return path


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_sidecar_digests(path: Path) -> list[str] | None:
    """The digests recorded beside ``path``, or None when there is no sidecar."""
    sidecar = sidecar_path(path)
    if not sidecar.exists():
        return None
    lines = sidecar.read_text(errors="replace").splitlines()
    return [line.split()[0] for line in lines if line.strip()]


def verify_sidecar(path: Path, data: bytes, what: str = "file", error: type[FusionrecError] = FusionrecError, *,
                   required: bool = False) -> None:  # fmt: skip
    """Raise ``error`` when ``path`` has a sidecar that lists no digest of ``data`` (damaged or
    changed), or, with ``required``, has no sidecar at all: a deleted sidecar would otherwise let
    an edited file through unchecked."""
    expected = read_sidecar_digests(path)
    if expected is None:
        if required:
            raise error(f"{what} {path}: no {path.name}.sha256 beside it, so a damaged or edited file cannot be told "
                        f"from a good one; restore the sidecar or export again (--allow_missing_checksums accepts it "
                        "knowingly)")  # fmt: skip
        return
    if hashlib.sha256(data).hexdigest() not in expected:
        raise error(
            f"{what} {path}: sha256 does not match {path.name}.sha256; the file is damaged or was changed"
        )


def _sidecar_text(digests: list[str], name: str) -> bytes:
    return "".join(f"{digest}  {name}\n" for digest in digests).encode()


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


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
