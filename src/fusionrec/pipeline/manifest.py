"""A pipeline export's manifest, its list of files and its digest, without loading a model (the
server's supervisor pins an export with these and never imports torch).

The export's digest is the sha256 of every file's path and sha256: it names one export. The
server pins it at start, and a worker that finds another export in the directory refuses to
serve. Every file is checked against its sidecar on the way (a missing sidecar is an error
unless the caller accepts it knowingly).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fusionrec import __version__
from fusionrec._atomic import verify_sidecar
from fusionrec.errors import FusionrecError

EXPORT_FORMAT = "fusionrec.pipeline.export"
EXPORT_VERSION = 1
MANIFEST = "manifest.json"
TOP_LEVEL_FILES = (MANIFEST, "fusion.json", "pipeline.json", "input_schema.json")


def read_manifest(directory: Path, *, require_checksums: bool = True) -> dict:
    """The checked manifest of an export directory: its format, a version this fusionrec reads,
    and models listed as ``{name, kind, files}``."""
    path = directory / MANIFEST
    if not path.exists():
        raise FusionrecError(f"saved_model_dir {str(directory)!r}: no manifest.json; export a pipeline first "
                             "(`fusionrec train` writes run_dir/export)")  # fmt: skip
    raw = path.read_bytes()
    verify_sidecar(path, raw, "pipeline file", required=require_checksums)
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FusionrecError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise FusionrecError(f"{path}: not a fusionrec pipeline export")
    version = manifest.get("version")
    if not isinstance(version, int) or version > EXPORT_VERSION:
        raise FusionrecError(f"{path}: export format version {version!r} is newer than this fusionrec {__version__} "
                             f"reads ({EXPORT_VERSION})")  # fmt: skip
    models = manifest.get("models")
    if not isinstance(models, list) or not all(isinstance(m, dict) and {"name", "kind"} <= set(m) for m in models):
        raise FusionrecError(f"{path}: its models entry is not a list of {{name, kind, files}}")
    return manifest


def export_files(directory: Path, manifest: dict) -> list[str]:
    """Every file of an export, as paths relative to it: the top-level files, then each
    model's files as its manifest entry lists them (never outside the directory)."""
    files = list(TOP_LEVEL_FILES)
    for model in manifest["models"]:
        for relative in model.get("files", []):
            parts = Path(str(relative)).parts
            if Path(str(relative)).is_absolute() or ".." in parts or not parts:
                raise FusionrecError(f"{directory / MANIFEST}: model {model['name']!r} lists file {relative!r}, "
                                     "which is not a path inside the export")  # fmt: skip
            if not str(relative).endswith(".sha256"):  # a deep model lists its sidecars; they are checked with their files
                files.append(str(Path("models") / str(model["name"]) / str(relative)))
    return files


def export_digest(directory: Path, manifest: dict, *, require_checksums: bool = True) -> str:
    """The sha256 of every export file's relative path and sha256, each file checked against its
    sidecar first (a missing sidecar is an error unless ``require_checksums`` is off)."""
    return files_digest(directory, sorted(export_files(directory, manifest)), "pipeline export file",
                        require_checksums=require_checksums)  # fmt: skip


def files_digest(directory: Path, relatives: list, what: str, *, require_checksums: bool = True) -> str:
    """The sha256 of the files' relative paths and sha256s (in the order given), each file
    checked against its sidecar first."""
    lines = []
    for relative in relatives:
        path = directory / relative
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise FusionrecError(f"saved_model_dir {str(directory)!r}: cannot read {relative} ({error.strerror})") from None
        verify_sidecar(path, raw, what, required=require_checksums)
        lines.append(f"{relative}\t{hashlib.sha256(raw).hexdigest()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def pinned_digest(saved_model_dir: str | Path, *, require_checksums: bool = True) -> str:
    """The digest of the export in ``saved_model_dir``, every file checked."""
    directory = Path(saved_model_dir)
    return export_digest(directory, read_manifest(directory, require_checksums=require_checksums),
                         require_checksums=require_checksums)  # fmt: skip
