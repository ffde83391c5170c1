"""Out-of-core data for fusionrec.gbdt (Chen & Guestrin, KDD 2016, section 4.3).

Data that does not fit in memory comes in batches, read twice:

1. the bin edges: each feature's values of each batch go into a weighted quantile sketch
   (``sketch.WeightedQuantileSketch``: mergeable, prunable summaries, the sample weights as the
   quantile weights), merged over the batches. A feature with at most ``max_bin - 1`` distinct
   values gets a cut between every pair of neighbours, exactly as in memory (``binning``); one
   with more gets the sketch's cuts, within ``sketch_eps`` of the weighted quantiles.
2. the pages: each batch binned with those edges (uint8 codes; for sparse input the codes of
   the present entries only, with their row and column ids) and written to a page file,
   compressed with lz4 when that saves at least a tenth (the sparse pages' ids do; the codes
   of continuous features barely compress, and reading them compressed would cost every pass
   a decompression for nothing), the pages spread round-robin over ``cache_dirs`` (the paper's
   block sharding over disks).

Labels and weights stay in memory (a float32 and a float64 per row). Training streams the
pages in order; a reader thread maps (raw pages) or reads and decompresses (lz4 pages, into a
ring of max_pages_in_flight + 2 reused buffers) up to ``max_pages_in_flight`` pages ahead, so
the codes in memory are at most max_pages_in_flight + 2 pages of ``page_rows`` rows (a page's
codes are valid until the next page is read: copy them to keep them). Mapping instead of
reading saves the reader a copy of every byte on every pass: on 2 cores the reader's work is
taken from the training threads.

A source is a callable returning a fresh iterable of batches (called once per pass), a list
of batches, or Parquet / CSV path(s) read by pyarrow in batches (``label_column``). A batch is
``(X, y)``, ``(X, y, weight)`` or a dict with ``data``, ``label`` and ``weight``; X is
anything ``fusionrec.gbdt`` reads (numpy, pandas, polars, pyarrow, scipy CSR).

Every page's bytes have a 64-bit digest kept in memory (``page_digest``), checked on every
read: a page deleted or damaged while training is an error naming the file. A full disk while writing is an error naming the
directory; the pages written so far are removed. Pages live in ``fusionrec-pages-<pid>-<id>``
directories, removed by ``close()`` (or leaving a ``with`` block, or the dataset being
collected); a killed process leaves its directory, and the next ExternalDataset in the same
cache directory removes it: each directory has a lock file beside it that its process holds
(``flock``) while the pages live, so a live training's pages are never taken for stale, even
from another PID namespace (two containers on one volume). NFS shares such locks only where
its lock manager runs; give each machine its own cache directory there.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import queue
import shutil
import tempfile
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import lz4.frame
import numpy as np
import scipy.sparse as sp
from numba import njit

from fusionrec.errors import FusionrecError
from fusionrec.gbdt.binning import SparseCodes, apply_cuts, pack_cuts
from fusionrec.gbdt.data import FeatureMatrix, check_label, check_weight, to_feature_matrix
from fusionrec.gbdt.params import MAX_BIN, check_max_bin
from fusionrec.gbdt.sketch import WeightedQuantileSketch, sketch_cuts
from fusionrec.gbdt.tree import add_leaf_values_by_codes_dense, add_leaf_values_by_codes_sparse

PAGE_DIR_PREFIX = "fusionrec-pages-"
LOCK_SUFFIX = ".lock"  # fusionrec-pages-<pid>-<id>.lock beside its directory, flock-ed while the pages live
DEFAULT_PAGE_ROWS = 1 << 18
PATH_BATCH_ROWS = 1 << 16  # rows per pyarrow batch of a Parquet / CSV source


# ------------------------------------------------------------------ sources
@dataclass
class Batch:
    matrix: FeatureMatrix
    label: np.ndarray | None
    weight: np.ndarray | None


def _table_batches(paths: list[Path], label_column: str | None, weight_column: str | None) -> Iterator[Batch]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    for path in paths:
        try:
            if path.suffix == ".parquet":
                parquet = pq.ParquetFile(path)
                record_batches = parquet.iter_batches(batch_size=PATH_BATCH_ROWS)
            else:
                record_batches = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 24))
        except (OSError, ValueError) as error:
            raise FusionrecError(f"{path}: cannot be read as {'Parquet' if path.suffix == '.parquet' else 'CSV'} ({error})") from None
        for number, record_batch in enumerate(record_batches):
            names = record_batch.schema.names
            for role, column in (("label_column", label_column), ("weight_column", weight_column)):
                if column is not None and column not in names:
                    raise FusionrecError(f"{path}: {role} {column!r} is not a column; columns are {names}")
            features = [n for n in names if n not in (label_column, weight_column)]
            where = f"{path} batch {number}"
            matrix = to_feature_matrix(record_batch.select(features), where)
            label = record_batch.column(label_column).to_numpy(zero_copy_only=False) if label_column else None
            weight = record_batch.column(weight_column).to_numpy(zero_copy_only=False) if weight_column else None
            yield Batch(matrix, label, weight)


def iter_batches(source: Any, *, label_column: str | None = None, weight_column: str | None = None) -> Iterator[Batch]:
    """One pass over ``source``'s batches, each validated (errors name the batch)."""
    if isinstance(source, (str, os.PathLike)) or (isinstance(source, (list, tuple)) and source
                                                  and all(isinstance(s, (str, os.PathLike)) for s in source)):  # fmt: skip
        paths = [Path(source)] if isinstance(source, (str, os.PathLike)) else [Path(s) for s in source]
        if label_column is None:
            raise FusionrecError("label_column: a Parquet / CSV source needs the name of its label column")
        yield from _table_batches(paths, label_column, weight_column)
        return
    if callable(source):
        batches = source()
    elif isinstance(source, (list, tuple)):
        batches = source
    else:
        raise FusionrecError(
            f"source: got {type(source).__name__}; an out-of-core source is read twice (bin edges, then pages), so give a "
            "callable returning a fresh iterable of batches, a list of batches, or Parquet / CSV paths"
        )
    for number, item in enumerate(batches):
        where = f"batch {number}"
        if isinstance(item, dict):
            data, label, weight = item.get("data"), item.get("label"), item.get("weight")
        elif isinstance(item, tuple) and len(item) in (2, 3):
            data, label, weight = item[0], item[1], item[2] if len(item) == 3 else None
        else:
            raise FusionrecError(f"{where}: expected (X, y), (X, y, weight) or a dict with data / label / weight, "
                                 f"got {type(item).__name__}")  # fmt: skip
        yield Batch(to_feature_matrix(data, f"{where} data"), label, weight)


# ------------------------------------------------------------------ pages
@dataclass(frozen=True)
class PageEntry:
    path: Path
    row_start: int
    n_rows: int
    n_entries: int  # present entries (sparse), or n_rows x n_features (dense)
    digest: int  # page_digest of the file's bytes
    n_bytes: int  # of the file
    compressed: bool


def _write_atomically(path: Path, payload: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as handle:
            handle.write(payload)
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            raise FusionrecError(f"{path.parent}: no space left on the device writing out-of-core page {path.name} "
                                 f"({len(payload):,} bytes); give cache_dirs with room (pages are removed)") from None  # fmt: skip
        raise FusionrecError(f"{path}: cannot write an out-of-core page ({error})") from None


class PageStore:
    """The page files of one dataset, written in order, read back in order by a thread."""

    def __init__(self, cache_dirs: list[Path], sparse: bool, n_features: int):
        _remove_stale_page_dirs(cache_dirs)
        self.dirs = []
        self._locks: list[int] = []  # the held lock files' descriptors, one per directory
        for base in cache_dirs:
            try:
                base.mkdir(parents=True, exist_ok=True)
                directory, lock = _make_page_dir(base)
            except OSError as error:
                self.remove()
                raise FusionrecError(f"cache_dirs: {base} cannot hold out-of-core pages ({error})") from None
            self.dirs.append(directory)
            self._locks.append(lock)
        self.sparse = sparse
        self.n_features = n_features
        self.pages: list[PageEntry] = []
        self.n_rows = 0
        self._ring: list[bytearray] = []
        self._finalizer = weakref.finalize(self, _remove_dirs, list(self.dirs), list(self._locks))

    def append(self, codes: np.ndarray | SparseCodes) -> None:
        number = len(self.pages)
        path = self.dirs[number % len(self.dirs)] / f"page-{number:06d}.lz4"
        if self.sparse:
            arrays = [codes.indptr.astype(np.int64), codes.indices.astype(np.int32), codes.codes]
            n_rows, n_entries = codes.indptr.shape[0] - 1, int(codes.codes.shape[0])
        else:
            arrays = [np.ascontiguousarray(codes)]
            n_rows, n_entries = codes.shape[0], codes.size
        raw = b"".join(a.tobytes() for a in arrays)
        payload = lz4.frame.compress(raw, compression_level=0)
        compressed = len(payload) <= 0.9 * len(raw)
        if not compressed:
            payload = raw
        _write_atomically(path, payload)
        self.pages.append(PageEntry(path, self.n_rows, n_rows, n_entries, page_digest(payload), len(payload), compressed))
        self.n_rows += n_rows

    def read(self, page: PageEntry, buffer: bytearray | None = None) -> np.ndarray | SparseCodes:
        """The page's codes: a page stored raw is mapped (read-only, no copy: a pass then
        costs its reader thread the digest, not a copy of every byte); a compressed one is read
        into ``buffer`` when given and decompressed (a view, valid until the buffer is reused)."""
        try:
            with open(page.path, "rb") as handle:
                n_bytes = os.fstat(handle.fileno()).st_size
                if n_bytes != page.n_bytes:
                    raise FusionrecError(f"{page.path}: an out-of-core page is truncated or grown ({n_bytes:,} bytes, written "
                                         f"as {page.n_bytes:,}); rebuild the dataset")  # fmt: skip
                if not page.compressed and n_bytes > 0:
                    payload = memoryview(mmap.mmap(handle.fileno(), n_bytes, access=mmap.ACCESS_READ))
                else:
                    if buffer is None or len(buffer) < n_bytes:
                        buffer = bytearray(n_bytes)
                    n_read = handle.readinto(memoryview(buffer)[:n_bytes])
                    if n_read != n_bytes:
                        raise FusionrecError(f"{page.path}: an out-of-core page is truncated ({n_read:,} of {n_bytes:,} "
                                             "bytes); rebuild the dataset")  # fmt: skip
                    payload = memoryview(buffer)[:n_bytes]
        except FileNotFoundError:
            raise FusionrecError(f"{page.path}: an out-of-core page is missing; it was removed while the dataset was in use "
                                 "(pages live until the dataset is closed)") from None  # fmt: skip
        except OSError as error:
            raise FusionrecError(f"{page.path}: cannot read an out-of-core page ({error})") from None
        digest = page_digest(payload)
        if digest != page.digest:
            raise FusionrecError(f"{page.path}: an out-of-core page is damaged (digest {digest:016x}, written as "
                                 f"{page.digest:016x}); rebuild the dataset")  # fmt: skip
        raw = lz4.frame.decompress(payload) if page.compressed else payload
        if not self.sparse:
            return np.frombuffer(raw, np.uint8).reshape(page.n_rows, self.n_features)
        indptr_bytes, index_bytes = 8 * (page.n_rows + 1), 4 * page.n_entries
        indptr = np.frombuffer(raw, np.int64, page.n_rows + 1)
        indices = np.frombuffer(raw, np.int32, page.n_entries, indptr_bytes)
        codes = np.frombuffer(raw, np.uint8, page.n_entries, indptr_bytes + index_bytes)
        return SparseCodes(indptr, indices, codes, (page.n_rows, self.n_features))

    def iter_pages(self, max_in_flight: int = 2) -> Iterator[tuple[int, np.ndarray | SparseCodes]]:
        """(first row, codes) of every page in order; a thread reads and decompresses up to
        ``max_in_flight`` pages ahead (lz4 and file reads release the GIL)."""
        ahead: queue.Queue = queue.Queue(maxsize=max(1, max_in_flight))
        stop = threading.Event()
        done = object()

        # a ring of buffers, kept from pass to pass: one being filled, max_in_flight queued, one with the consumer
        size = max((page.n_bytes for page in self.pages), default=0)
        n_buffers = min(len(self.pages), max(1, max_in_flight) + 2)
        if len(self._ring) != n_buffers or any(len(b) < size for b in self._ring):
            self._ring = [bytearray(size) for _ in range(n_buffers)]
        ring = self._ring

        def produce() -> None:
            try:
                for number, page in enumerate(self.pages):
                    if stop.is_set():
                        return
                    item = (page.row_start, self.read(page, ring[number % len(ring)]))
                    while not stop.is_set():
                        try:
                            ahead.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                ahead.put(done)
            except BaseException as error:  # handed to the consumer, raised there
                ahead.put(error)

        thread = threading.Thread(target=produce, name="fusionrec-pages", daemon=True)
        thread.start()
        try:
            while True:
                item = ahead.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    ahead.get_nowait()
                except queue.Empty:
                    pass
                thread.join(timeout=0.05)

    def remove(self) -> None:
        _remove_dirs(self.dirs, self._locks)
        self._locks = []
        self._ring = []


def page_digest(payload) -> int:
    """A 64-bit digest of a page's bytes to catch damage (not an adversary): each 8-byte word,
    keyed by its position, through a multiply-xorshift mix, summed; the tail bytes likewise. At
    about 13 GB/s (one core of this project's benchmark machine) it costs a pass a fraction of
    what CRC-32 (4 GB/s) would."""
    data = np.frombuffer(payload, np.uint8)
    n_words = data.shape[0] // 8
    tail = np.zeros(8, np.uint8)
    tail[: data.shape[0] - 8 * n_words] = data[8 * n_words :]
    return int(_digest_words(data[: 8 * n_words].view(np.uint64), tail.view(np.uint64), np.uint64(data.shape[0])))


@njit(cache=True, nogil=True)
def _digest_words(words, tail, length):
    key = np.uint64(0x9E3779B97F4A7C15)
    total = length * key
    for i in range(words.shape[0]):  # no branch in the loop: it vectorizes (2x)
        total += _mix(words[i], np.uint64(i), key)
    return total + _mix(tail[0], np.uint64(words.shape[0]), key)


@njit(cache=True, nogil=True, inline="always")
def _mix(word, position, key):
    x = word ^ (position * key)
    x ^= x >> np.uint64(29)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    return x ^ (x >> np.uint64(32))


def _make_page_dir(base: Path) -> tuple[Path, int]:
    """A new page directory in ``base`` and the descriptor of its held lock. The lock file comes
    first and the directory after it, so a scan never finds a live directory without its lock."""
    fd, lock_name = tempfile.mkstemp(prefix=f"{PAGE_DIR_PREFIX}{os.getpid()}-", suffix=LOCK_SUFFIX, dir=base)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
        directory = Path(lock_name[: -len(LOCK_SUFFIX)])
        directory.mkdir()
    except OSError:
        os.close(fd)
        Path(lock_name).unlink(missing_ok=True)
        raise
    return directory, fd


def _remove_dirs(dirs: list[Path], locks: list[int] = ()) -> None:
    for directory in dirs:
        shutil.rmtree(directory, ignore_errors=True)
        Path(str(directory) + LOCK_SUFFIX).unlink(missing_ok=True)
    for fd in locks:
        try:
            os.close(fd)
        except OSError:
            pass


def _remove_stale_page_dirs(cache_dirs: list[Path]) -> None:
    """Remove the page directories of trainings that ended without removing them (killed).

    A directory is stale when its lock file can be locked: the kernel releases a process's
    ``flock`` when it dies, whatever PID namespace it ran in (two containers sharing a volume see
    different PIDs; a PID alone named the wrong process). A directory without a lock file was
    written by a fusionrec before the locks; it is stale when its PID runs nowhere here."""
    for base in cache_dirs:
        if not base.is_dir():
            continue
        for lock in base.glob(PAGE_DIR_PREFIX + "*" + LOCK_SUFFIX):
            try:
                fd = os.open(lock, os.O_RDWR)
            except OSError:
                continue  # removed meanwhile, or not ours to open
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # held: a live training, here or in another container
            _remove_dirs([Path(str(lock)[: -len(LOCK_SUFFIX)])], [fd])
        for directory in base.glob(PAGE_DIR_PREFIX + "*"):
            if directory.name.endswith(LOCK_SUFFIX) or Path(str(directory) + LOCK_SUFFIX).exists() or not directory.is_dir():
                continue
            pid_text = directory.name[len(PAGE_DIR_PREFIX):].split("-", 1)[0]
            if pid_text.isdigit() and int(pid_text) != os.getpid() and not _process_exists(int(pid_text)):
                shutil.rmtree(directory, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------ the data set
class ExternalDataset:
    """Training data paged to disk (see the module docstring). Use it where a ``Dataset`` goes
    as ``reference`` (its bin edges), or iterate ``iter_codes()``; ``close()`` removes the pages."""

    def __init__(self, source: Any, *, label_column: str | None = None, weight_column: str | None = None,
                 max_bin: int = MAX_BIN, sketch_eps: float = 0.01, page_rows: int = DEFAULT_PAGE_ROWS,
                 cache_dirs: str | os.PathLike | list | None = None, max_pages_in_flight: int = 2,
                 feature_names: list[str] | None = None):  # fmt: skip
        check_max_bin(max_bin)
        if not isinstance(page_rows, (int, np.integer)) or page_rows < 1:
            raise FusionrecError(f"parameter page_rows={page_rows!r}: must be a positive integer")
        if not isinstance(max_pages_in_flight, (int, np.integer)) or max_pages_in_flight < 1:
            raise FusionrecError(f"parameter max_pages_in_flight={max_pages_in_flight!r}: must be a positive integer")
        self.source, self.label_column, self.weight_column = source, label_column, weight_column
        self.max_bin = int(max_bin)
        self.page_rows = int(page_rows)
        self.max_pages_in_flight = int(max_pages_in_flight)
        dirs = cache_dirs if isinstance(cache_dirs, (list, tuple)) else [cache_dirs or tempfile.gettempdir()]
        self.cache_dirs = [Path(d) for d in dirs]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            self._first_pass(sketch_eps, feature_names, pool)
        self.cut_table, self.n_cuts = pack_cuts(self.cuts)
        self.pages = PageStore(self.cache_dirs, self.is_sparse, self.n_features)
        try:
            self._second_pass()
        except BaseException:
            self.pages.remove()
            raise

    def _batches(self) -> Iterator[Batch]:
        return iter_batches(self.source, label_column=self.label_column, weight_column=self.weight_column)

    def _first_pass(self, sketch_eps: float, feature_names: list[str] | None, pool: ThreadPoolExecutor) -> None:
        labels, weights, sketches = [], [], None
        self.feature_names, self.is_sparse, n_features = feature_names, None, None
        for number, batch in enumerate(self._batches()):
            matrix = batch.matrix
            if n_features is None:
                n_features, self.is_sparse = matrix.n_features, matrix.is_sparse
                self.feature_types = matrix.feature_types
                if self.feature_names is None:
                    self.feature_names = matrix.feature_names
                sketches = [WeightedQuantileSketch(sketch_eps) for _ in range(n_features)]
            elif matrix.n_features != n_features or matrix.is_sparse != self.is_sparse:
                raise FusionrecError(f"batch {number}: {matrix.n_features} {'sparse' if matrix.is_sparse else 'dense'} "
                                     f"features, but batch 0 has {n_features} {'sparse' if self.is_sparse else 'dense'}")  # fmt: skip
            elif matrix.feature_names is not None and self.feature_names is not None and matrix.feature_names != self.feature_names:
                raise FusionrecError(f"batch {number}: feature names {matrix.feature_names} differ from batch 0's {self.feature_names}")
            if batch.label is None:
                raise FusionrecError(f"batch {number}: has no label")
            label = check_label(batch.label, matrix.n_rows, f"batch {number} label")
            weight = check_weight(batch.weight, matrix.n_rows, f"batch {number} weight")
            labels.append(label)
            weights.append(weight)
            # rows of weight 0 take no part in the edges, as in memory (binning.compute_cuts)
            keep = np.ones(matrix.n_rows, bool) if weight is None else weight > 0
            if matrix.is_sparse:
                csc = matrix.values.tocsc()

                def push(j: int) -> None:
                    rows = csc.indices[csc.indptr[j] : csc.indptr[j + 1]]
                    kept = keep[rows]
                    sketches[j].push(csc.data[csc.indptr[j] : csc.indptr[j + 1]][kept], None if weight is None else weight[rows][kept])
            else:
                values = matrix.values if keep.all() else matrix.values[keep]
                kept_weight = None if weight is None else weight[keep]  # unweighted: a plain sort, no argsort

                def push(j: int) -> None:
                    sketches[j].push(values[:, j], kept_weight)

            # features in parallel: the sort and the summary kernels release the GIL
            list(pool.map(push, range(n_features)))
        if n_features is None:
            raise FusionrecError("source: gave no batches")
        self.n_features = n_features
        self.label = np.concatenate(labels)
        self.weight = None if all(w is None for w in weights) else np.concatenate(
            [np.ones(l.shape[0]) if w is None else w for l, w in zip(labels, weights)])  # fmt: skip
        self.cuts = sketch_cuts(sketches, self.max_bin)

    def _second_pass(self) -> None:
        pending: list[FeatureMatrix] = []
        n_pending = 0
        n_rows = 0
        for batch in self._batches():
            pending.append(batch.matrix)
            n_pending += batch.matrix.n_rows
            n_rows += batch.matrix.n_rows
            while n_pending >= self.page_rows:
                values = _stack([m.values for m in pending])
                self.pages.append(apply_cuts(values[: self.page_rows], self.cut_table, self.n_cuts))
                rest = values[self.page_rows :]
                pending = [FeatureMatrix(rest, None, [])] if rest.shape[0] else []
                n_pending = rest.shape[0]
        if n_pending:
            self.pages.append(apply_cuts(_stack([m.values for m in pending]), self.cut_table, self.n_cuts))
        if n_rows != self.label.shape[0]:
            raise FusionrecError(f"source: the second pass read {n_rows:,} rows, the first {self.label.shape[0]:,}; a source "
                                 "must give the same batches every time it is read")  # fmt: skip

    @property
    def n_rows(self) -> int:
        return int(self.label.shape[0])

    @property
    def n_bins_per_feature(self) -> np.ndarray:
        """Number of value bins of each feature (cuts + 1); the missing code is extra."""
        return (self.n_cuts + 1).astype(np.int32)

    # what training reads of a data set besides its codes
    group_ptr = None
    raw = None

    def add_tree_margins(self, trees: list, groups: list[int], margin: np.ndarray) -> None:
        """margin[row, group] += each tree's leaf value, walking the trees on the pages' codes
        (a code <= the node's split_bin goes left, MISSING_CODE the default way): trees grown on
        these bin edges (``split_bin`` set), as hist trees are."""
        for tree in trees:
            if np.any((tree.feature >= 0) & (tree.split_bin < 0)):
                raise FusionrecError("an out-of-core data set predicts with the bins of its own edges; a tree without "
                                     "split_bin (exact or approx, or other edges) needs the raw values")  # fmt: skip
        for start, codes in self.iter_codes():
            for tree, group in zip(trees, groups):
                out = margin[start : start + codes.shape[0], group]
                if isinstance(codes, SparseCodes):
                    add_leaf_values_by_codes_sparse(codes.indptr, codes.indices, codes.codes, tree.code_nodes, tree.value, out)
                else:
                    add_leaf_values_by_codes_dense(codes, tree.code_nodes, tree.value, out)
                margin[start : start + codes.shape[0], group] = out

    def iter_codes(self) -> Iterator[tuple[int, np.ndarray | SparseCodes]]:
        """(first row, codes) of every page in order (dense: (rows, n_features) uint8)."""
        return self.pages.iter_pages(self.max_pages_in_flight)

    def close(self) -> None:
        self.pages.remove()

    def __enter__(self) -> "ExternalDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ExternalDataset({self.n_rows:,} rows x {self.n_features} features, {len(self.pages.pages)} pages in "
                f"{[str(d) for d in self.pages.dirs]})")  # fmt: skip


def _stack(values: list) -> np.ndarray | sp.csr_matrix:
    if len(values) == 1:
        return values[0]
    return sp.vstack(values, format="csr") if sp.issparse(values[0]) else np.concatenate(values)
