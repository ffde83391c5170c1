"""Versioned JSON model files.

Forward-compatibility policy (also in docs/gbdt.md):

* ``format_version`` is an integer bumped on any change a reader must know about. A file
  with a larger version than this library's is refused with a message naming the file and
  both versions; older versions are read (and upgraded) by this library.
* Unknown keys are errors, not ignored: a key we do not understand could change what the
  model predicts.
* Every array is checked before any kernel sees it (lengths, child indices pointing
  forward and in range, feature ids in range, finite values), so a damaged file raises
  :class:`ModelFileError` and never crashes the process.
* Files are written atomically with a ``.sha256`` sidecar; when the sidecar is present
  a file whose digest it does not list is refused as damaged. A save killed at any point
  leaves the old or the new model loadable (see ``fusionrec._atomic``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusionrec import __version__
from fusionrec._atomic import atomic_write_bytes, verify_sidecar
from fusionrec.errors import FusionrecError, ModelFileError
from fusionrec.gbdt.params import MAX_BIN_RULE, OBJECTIVES, RULES, is_max_bin, n_classes_of, resolve_params
from fusionrec.gbdt.split import NO_SPLIT_BIN
from fusionrec.gbdt.tree import THRESHOLD_ALL, Tree

FORMAT = "fusionrec.gbdt.Booster"
FORMAT_VERSION = 1
_TOP_KEYS = {
    "format", "format_version", "library_version", "params", "objective", "base_score", "n_groups",
    "n_features", "feature_names", "feature_types", "max_bin", "bin_edges", "best_iteration",
    "best_score", "rng_state", "tree_group", "trees", "attributes",
}  # fmt: skip
_TREE_KEYS = {"feature", "threshold", "split_bin", "left", "right", "default_left", "value", "cover", "gain"}
CUSTOM_OBJECTIVE = "custom"


# Runtime settings, not part of the model: the same model trained with 1 or 8 threads is
# the same file, byte for byte.
_RUNTIME_PARAMS = ("n_jobs", "verbosity")


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in params.items():
        if name in _RUNTIME_PARAMS:
            continue
        if callable(value):
            value = CUSTOM_OBJECTIVE if name == "objective" else None
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out


@dataclass
class ModelState:
    """Everything a model file holds, as plain values: what ``Booster`` is built from and saves.

    model_io reads files into this and writes this to files; it never imports ``Booster``.
    """

    params: dict[str, Any]
    trees: list[Tree]
    tree_group: list[int]
    base_score: float | None
    n_features: int | None
    feature_names: list[str] | None
    feature_types: list[str] | None
    cuts: list[np.ndarray]
    max_bin: int
    best_iteration: int | None
    best_score: float | None
    rng_state: dict[str, Any]
    attributes: dict[str, Any] = field(default_factory=dict)
    custom_objective: bool = False  # trained with a function a file cannot hold


def to_json_bytes(state: ModelState) -> bytes:
    n_groups = n_classes_of(state.params)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "params": _json_params(state.params),
        "objective": CUSTOM_OBJECTIVE if callable(state.params["objective"]) or state.custom_objective else state.params["objective"],
        "base_score": state.base_score,
        "n_groups": n_groups,
        "n_features": state.n_features,
        "feature_names": state.feature_names,
        "feature_types": state.feature_types,
        "max_bin": state.max_bin,
        "bin_edges": [c.tolist() for c in state.cuts],
        "best_iteration": state.best_iteration,
        "best_score": state.best_score,
        "rng_state": state.rng_state,
        "tree_group": list(state.tree_group),
        "trees": [tree.to_dict() for tree in state.trees],
        "attributes": state.attributes,
    }
    return json.dumps(document, allow_nan=False, separators=(",", ":")).encode()


def save(state: ModelState, path: str) -> None:
    if state.n_features is None:
        raise FusionrecError("save_model: this Booster has no trees yet; train it first")
    atomic_write_bytes(path, to_json_bytes(state))


def read_file(path: str | Path) -> ModelState:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"model file {path}: does not exist") from None
    except OSError as exc:
        raise ModelFileError(f"model file {path}: cannot be read ({exc.strerror})") from None
    verify_sidecar(path, raw, "model file", ModelFileError)
    return read_state(raw, str(path))


def _custom_objective_placeholder(margin, dataset):
    raise FusionrecError(
        "this model was trained with a custom objective, which a model file cannot hold; "
        "pass obj= (or Booster.set_objective) to continue training"
    )


def read_state(raw: bytes, source: str = "<bytes>") -> ModelState:
    """Parse and check a model document; every problem is a ModelFileError naming ``source``."""
    def fail(message: str) -> None:
        raise ModelFileError(f"model file {source}: {message}")

    if not raw:
        fail("is empty")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        fail(f"is not UTF-8 text (byte {exc.start}); not a fusionrec model")
    except json.JSONDecodeError as exc:
        fail(f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); truncated or damaged")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        fail(f"is not a fusionrec boosted-tree model (format {doc.get('format') if isinstance(doc, dict) else None!r}, expected {FORMAT!r})")
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        fail(f"format_version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        fail(
            f"format_version {version} was written by a newer fusionrec ({doc.get('library_version')}); "
            f"this fusionrec {__version__} reads up to format_version {FORMAT_VERSION}"
        )
    unknown = sorted(set(doc) - _TOP_KEYS)
    missing = sorted(_TOP_KEYS - set(doc))
    if unknown:
        fail(f"unknown keys {unknown} (refused: they could change predictions)")
    if missing:
        fail(f"missing keys {missing}")
    params = doc["params"]
    if not isinstance(params, dict):
        fail("params is not an object")
    unknown_params = sorted(set(params) - set(RULES))
    if unknown_params:
        fail(f"unknown parameters {unknown_params}")
    objective = doc["objective"]
    if objective != CUSTOM_OBJECTIVE and objective not in OBJECTIVES:
        fail(f"unknown objective {objective!r}; this fusionrec knows {list(OBJECTIVES)}")
    params = dict(params)
    params["objective"] = _custom_objective_placeholder if objective == CUSTOM_OBJECTIVE else objective
    try:
        resolved = resolve_params(params)
    except FusionrecError as exc:
        fail(f"bad parameters: {exc}")
    n_features = doc["n_features"]
    if not isinstance(n_features, int) or n_features < 1:
        fail(f"n_features {n_features!r} is not a positive integer")
    n_groups = doc["n_groups"]
    if n_groups != n_classes_of(resolved):
        fail(f"n_groups {n_groups!r} does not match the objective's {n_classes_of(resolved)}")
    names = doc["feature_names"]
    if names is not None and (not isinstance(names, list) or len(names) != n_features or not all(isinstance(n, str) for n in names)):
        fail(f"feature_names must be null or {n_features} strings")
    types = doc["feature_types"]
    if not isinstance(types, list) or len(types) != n_features:
        fail(f"feature_types must be a list of {n_features} strings")
    base_score = doc["base_score"]
    if not isinstance(base_score, (int, float)) or isinstance(base_score, bool) or not math.isfinite(base_score):
        fail(f"base_score {base_score!r} is not a finite number")
    edges = doc["bin_edges"]
    if not isinstance(edges, list) or len(edges) != n_features:
        fail(f"bin_edges must hold {n_features} lists")
    cuts = []
    for j, edge in enumerate(edges):
        try:
            arr = np.asarray(edge, dtype=np.float64)
        except (TypeError, ValueError):
            fail(f"bin_edges[{j}] is not a list of numbers")
        if arr.ndim != 1 or arr.shape[0] > 254 or not np.all(np.isfinite(arr)) or np.any(np.diff(arr) <= 0):
            fail(f"bin_edges[{j}] must be at most 254 finite, increasing numbers")
        cuts.append(arr)
    tree_group = doc["tree_group"]
    trees_doc = doc["trees"]
    if not isinstance(trees_doc, list) or not isinstance(tree_group, list) or len(trees_doc) != len(tree_group):
        fail("trees and tree_group must be lists of the same length")
    if len(trees_doc) % n_groups:
        fail(f"{len(trees_doc)} trees is not a whole number of rounds of {n_groups}")
    max_bin = doc["max_bin"]
    if not isinstance(max_bin, int) or not is_max_bin(max_bin):
        fail(f"max_bin {max_bin!r} is not {MAX_BIN_RULE}")
    trees = [_check_tree(t, i, n_features, cuts, fail) for i, t in enumerate(trees_doc)]
    for i, g in enumerate(tree_group):
        if g != i % n_groups:
            fail(f"tree_group[{i}] = {g!r}, expected {i % n_groups}")
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = doc["rng_state"]
    except (TypeError, ValueError, KeyError) as exc:
        fail(f"rng_state is not a PCG64 state ({exc})")
    best_iteration = doc["best_iteration"]
    if best_iteration is not None and (not isinstance(best_iteration, int) or not 0 <= best_iteration < len(trees) // n_groups):
        fail(f"best_iteration {best_iteration!r} is outside the {len(trees) // n_groups} rounds")
    attributes = doc["attributes"]
    if not isinstance(attributes, dict):
        fail("attributes is not an object")
    return ModelState(
        params=resolved,
        trees=trees,
        tree_group=list(tree_group),
        base_score=float(base_score),
        n_features=n_features,
        feature_names=names,
        feature_types=[str(t) for t in types],
        cuts=cuts,
        max_bin=max_bin,
        best_iteration=best_iteration,
        best_score=doc["best_score"],
        rng_state=rng.bit_generator.state,
        attributes=attributes,
        custom_objective=objective == CUSTOM_OBJECTIVE,
    )


_INTEGER_ARRAYS = ("feature", "split_bin", "left", "right", "default_left")
_NUMBER_ARRAYS = ("threshold", "value", "cover", "gain")


def _check_tree(doc: Any, index: int, n_features: int, cuts: list[np.ndarray], fail) -> Tree:
    """Every field's type and range, and the shape of the tree: a model that loads predicts
    the same leaf through every path (dense, sparse, pred_leaf, SHAP)."""
    where = f"trees[{index}]"
    if not isinstance(doc, dict) or set(doc) != _TREE_KEYS:
        keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        fail(f"{where} must have exactly the keys {sorted(_TREE_KEYS)}, got {keys}")
    lengths = {name: len(v) if isinstance(v, list) else -1 for name, v in doc.items()}
    if len(set(lengths.values())) != 1 or -1 in lengths.values() or 0 in lengths.values():
        fail(f"{where}: node arrays must be non-empty lists of one length, got lengths {lengths}")
    for name in _INTEGER_ARRAYS:
        bad = next((i for i, v in enumerate(doc[name]) if not isinstance(v, int) or isinstance(v, bool)), None)
        if bad is not None:
            fail(f"{where}.{name}[{bad}] = {doc[name][bad]!r} is not an integer")
    for name in _NUMBER_ARRAYS:
        bad = next((i for i, v in enumerate(doc[name]) if not isinstance(v, (int, float)) or isinstance(v, bool)), None)
        if bad is not None:
            fail(f"{where}.{name}[{bad}] = {doc[name][bad]!r} is not a number")
    try:
        tree = Tree.from_dict(doc)
    except (TypeError, ValueError, OverflowError):
        fail(f"{where}: node arrays hold values out of range for their type")
    m = tree.n_nodes
    internal = tree.feature >= 0
    leaf = ~internal
    ids = np.arange(m)

    def first(mask: np.ndarray) -> int:
        return int(np.flatnonzero(mask)[0])

    if np.any(tree.feature[internal] >= n_features) or np.any(tree.feature < -1):
        fail(f"{where}: feature ids must be -1 (leaf) or in [0, {n_features})")
    bad_default = (np.asarray(doc["default_left"]) != 0) & (np.asarray(doc["default_left"]) != 1)
    if bad_default.any():
        i = first(bad_default)
        fail(f"{where}.default_left[{i}] = {doc['default_left'][i]!r}; must be 0 or 1")
    for side in ("left", "right"):
        child = getattr(tree, side)
        if np.any((child[internal] <= ids[internal]) | (child[internal] >= m)):
            fail(f"{where}: {side} child ids must point forward inside the tree")
        if np.any(child[leaf] != -1):
            fail(f"{where}.{side}[{first(leaf & (child != -1))}]: a leaf's children must be -1")
    if np.any(tree.right[internal] != tree.left[internal] + 1):
        fail(f"{where}: right child must follow the left child (breadth-first numbering)")
    parents = np.bincount(np.concatenate([tree.left[internal], tree.right[internal]]), minlength=m)
    if parents[0] != 0 or np.any(parents[1:] != 1):
        i = first(np.concatenate([[parents[0] != 0], parents[1:] != 1]))
        fail(f"{where}: node {i} is the child of {parents[i]} nodes; {m} nodes must form one tree from node 0")
    if np.any(tree.split_bin[leaf] != -1):
        fail(f"{where}.split_bin[{first(leaf & (tree.split_bin != -1))}]: a leaf's split_bin must be -1")
    for i in np.flatnonzero(internal):
        cut = cuts[tree.feature[i]]
        b = int(tree.split_bin[i])
        if b == NO_SPLIT_BIN:  # a threshold of its own (tree_method exact / approx)
            continue
        if not 0 <= b <= cut.shape[0]:
            fail(f"{where}.split_bin[{i}] = {b}; feature {tree.feature[i]} has bins 0..{cut.shape[0]} (or -1: none)")
        expected = cut[b] if b < cut.shape[0] else THRESHOLD_ALL
        if tree.threshold[i] != expected:
            fail(f"{where}.threshold[{i}] = {float(tree.threshold[i])!r} is not bin edge {b} of feature {tree.feature[i]} "
                 f"({float(expected)!r})")  # fmt: skip
    for name in ("threshold", "value", "cover", "gain"):
        if not np.all(np.isfinite(getattr(tree, name))):
            fail(f"{where}: {name} holds non-finite values")
    return tree
