"""Awkward input, from outside: every row is used, skipped and counted, or refused by name.

Each test reproduces a case of the reliability checklist (ingestion, CTR features,
training, predict) that once lost rows silently, hung or crashed.
"""

import json
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusionrec.ctr.config import DataConfig, config_from_dict
from fusionrec.ctr.data import TableReader
from fusionrec.ctr.export import export, predict
from fusionrec.ctr.trainer import Trainer
from fusionrec.errors import FusionrecError

FIELDS = ["clk", "user", "price", "cat", "hist_cat", "hist_item"]


def small_config(tmp_path: Path, train: Path, **data) -> dict:
    """A small DIN model over every feature kind: hashed id, raw double, vocabulary id, two
    parallel history lists (max_seq_len 3)."""
    return {
        "train_input_path": str(train), "eval_input_path": str(train), "model_dir": str(tmp_path / "model"),
        "train_config": {"num_steps": 3, "save_checkpoints_steps": 100, "log_step_count_steps": 100},
        "data_config": {
            "input_fields": [{"input_name": "clk", "input_type": "INT32"}, {"input_name": "user"},
                             {"input_name": "price", "input_type": "DOUBLE"}, {"input_name": "cat"},
                             {"input_name": "hist_cat"}, {"input_name": "hist_item"}],
            "label_fields": ["clk"], "batch_size": 8, "num_epochs": 0, **data,
        },
        "feature_config": {"features": [
            {"input_names": ["user"], "hash_bucket_size": 50, "embedding_dim": 4},
            {"input_names": ["price"], "feature_type": "RawFeature"},
            {"input_names": ["cat"], "vocab_list": ["a", "b", "c"], "embedding_dim": 4, "embedding_name": "cat_emb"},
            {"input_names": ["hist_cat"], "feature_type": "SequenceFeature", "vocab_list": ["a", "b", "c"],
             "embedding_dim": 4, "embedding_name": "cat_emb", "max_seq_len": 3},
            {"input_names": ["hist_item"], "feature_type": "SequenceFeature", "hash_bucket_size": 30,
             "embedding_dim": 4, "max_seq_len": 3},
        ]},
        "model_config": {
            "model_class": "MultiTowerDIN",
            "feature_groups": [{"group_name": "user", "feature_names": ["user", "price", "cat"]}],
            "seq_att_groups": [{"group_name": "din", "seq_att_map": [{"key": ["cat"], "hist_seq": ["hist_cat"]}]}],
            "multi_tower": {"towers": [{"input": "user", "dnn": {"hidden_units": [8]}}],
                            "din_towers": [{"input": "din", "dnn": {"hidden_units": [8, 1]}}],
                            "final_dnn": {"hidden_units": [4]}},
        },
    }  # fmt: skip


def rows(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(0, 6))
        cats = "|".join(rng.choice(["a", "b", "c", "z"], length))  # z: out of vocabulary
        items = "|".join(str(v) for v in rng.integers(0, 100, length))
        out.append(f"{i % 2},u{rng.integers(0, 40)},{rng.uniform(1, 5000):.2f},{rng.choice(['a', 'b', 'q'])},{cats},{items}")
    return out


def write(path: Path, lines: list[str], *, header: bool = False) -> Path:
    text = "\n".join(([",".join(FIELDS)] if header else []) + lines)
    path.write_text(text + ("\n" if lines or header else ""))
    return path


@contextmanager
def no_hang(seconds: int = 60):
    """Fail instead of hanging (a reader that loops on empty input hung here once)."""

    def fail(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def exported(tmp_path):
    train = write(tmp_path / "train.csv", rows(64))
    trainer = Trainer(config_from_dict(small_config(tmp_path, train)))
    trainer.train(progress=False)
    export(trainer, tmp_path / "export")
    return tmp_path / "export"


# -- predict: every row written or rejected --------------------------------------------------
@pytest.mark.parametrize("suffix", [",", ",extra"], ids=["trailing-separator", "extra-column"])
def test_predict_rejects_every_malformed_row_and_never_writes_nothing_silently(exported, tmp_path, suffix):
    bad = write(tmp_path / "bad.csv", [line + suffix for line in rows(10, seed=1)])
    with pytest.raises(FusionrecError, match=r"0 valid rows in .*bad\.csv \(10 rows skipped .*wrong number of fields"):
        predict(str(bad), str(tmp_path / "out.csv"), str(exported))
    rejects = (tmp_path / "out.csv.rejects").read_text().splitlines()
    assert len(rejects) == 11 and all(f"\tline {i}\t" in rejects[i] for i in range(1, 11))


def test_predict_rows_read_equal_written_plus_rejected(exported, tmp_path):
    lines = rows(20, seed=2)
    lines[3] += ",x"  # one field too many
    lines[7] = lines[7].replace(",", ";", 1)  # one too few
    path = write(tmp_path / "mixed.csv", lines)
    result = predict(str(path), str(tmp_path / "out.csv"), str(exported))
    assert (result["rows_read"], result["rows_written"], result["rows_rejected"]) == (20, 18, 2)
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 1 + 18


def test_predict_needs_no_label_column_with_or_without_header(exported, tmp_path):
    lines = rows(12, seed=3)
    unlabeled = [line.split(",", 1)[1] for line in lines]
    headerless = write(tmp_path / "nolabel.csv", unlabeled)
    reference = predict(str(write(tmp_path / "all.csv", lines)), str(tmp_path / "a.csv"), str(exported),
                        reserved_cols="user", output_cols="probs double")  # fmt: skip
    result = predict(str(headerless), str(tmp_path / "b.csv"), str(exported), reserved_cols="user", output_cols="probs double")
    assert result["rows_written"] == reference["rows_written"] == 12
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_header_file_without_the_label_is_matched_by_name(tmp_path):
    (tmp_path / "h.csv").write_text("s,x,extra,n\na,1.5,zz,3\nb,2,zz,4\n")
    reader = TableReader(reader_config(with_header=True), labels=False, optional=("clk",))
    table = pa.concat_tables(list(reader.iter_tables([str(tmp_path / "h.csv")])))
    assert table.column("clk").null_count == 2
    assert table.column("s").to_pylist() == ["a", "b"] and table.column("n").to_pylist() == [3, 4]
    with pytest.raises(FusionrecError, match=r"the header has no column \['clk'\]"):
        list(TableReader(reader_config(with_header=True)).iter_tables([str(tmp_path / "h.csv")]))


def test_predict_selected_cols_picks_columns_of_a_wider_file(exported, tmp_path):
    lines = rows(12, seed=4)
    wider = [f"req{i}," + line.split(",", 1)[1] + ",tail" for i, line in enumerate(lines)]  # id, 5 features, extra
    path = write(tmp_path / "wide.csv", wider)
    with pytest.raises(FusionrecError, match="0 valid rows"):  # by position it does not fit
        predict(str(path), str(tmp_path / "x.csv"), str(exported))
    result = predict(str(path), str(tmp_path / "s.csv"), str(exported), selected_cols="1,2,3,4,5",
                     reserved_cols="user", output_cols="probs double")  # fmt: skip
    reference = predict(str(write(tmp_path / "all.csv", lines)), str(tmp_path / "a.csv"), str(exported),
                        reserved_cols="user", output_cols="probs double")  # fmt: skip
    assert result["rows_written"] == reference["rows_written"] == 12
    assert (tmp_path / "s.csv").read_text() == (tmp_path / "a.csv").read_text()
    with pytest.raises(FusionrecError, match="selected_cols: 2 column indices for 5 input fields"):
        predict(str(path), str(tmp_path / "s.csv"), str(exported), selected_cols="1,2")


def test_predict_swapped_columns_are_rejected_by_type(exported, tmp_path):
    lines = rows(6, seed=5)
    swapped = []
    for line in lines:  # user and price swapped: 'u17' is not a DOUBLE
        f = line.split(",")
        f[1], f[2] = f[2], f[1]
        swapped.append(",".join(f))
    path = write(tmp_path / "swapped.csv", swapped)
    with pytest.raises(FusionrecError, match="0 valid rows"):
        predict(str(path), str(tmp_path / "out.csv"), str(exported))
    assert "column price: value is not a number (DOUBLE)" in (tmp_path / "out.csv.rejects").read_text()


def test_predict_non_utf8_line_is_rejected_and_the_rest_scored(exported, tmp_path):
    data = ("\n".join(rows(8, seed=6)) + "\n").encode()
    lines = data.split(b"\n")
    lines[2] = lines[2].replace(b"u", b"\xff\xfe", 1)
    (tmp_path / "latin.csv").write_bytes(b"\n".join(lines))
    result = predict(str(tmp_path / "latin.csv"), str(tmp_path / "out.csv"), str(exported))
    assert (result["rows_read"], result["rows_written"], result["rows_rejected"]) == (8, 7, 1)
    assert "\tline 3\tline is not UTF-8 text\t" in (tmp_path / "out.csv.rejects").read_text()


def test_predict_counts_out_of_vocabulary_truncated_blank_and_defaulted(exported, tmp_path):
    lines = ["0,u1,,z,a|b|c|a|b,1|2|3|4|5", "", "1,u2,3.5,a,,", "", "0,u3,2,q,z,7"]
    result = predict(str(write(tmp_path / "p.csv", lines)), str(tmp_path / "out.csv"), str(exported))
    assert result["rows_written"] == 3 and result["blank_lines"] == 2
    assert result["defaults_used"] == {"price": 1}
    assert result["features"]["cat"] == {"out_of_vocabulary": 2}  # z and q
    assert result["features"]["hist_cat"] == {"out_of_vocabulary": 1, "truncated": 1}
    assert result["features"]["hist_item"] == {"truncated": 1}


def test_predict_value_beyond_float32_is_rejected_not_scored_nan(exported, tmp_path):
    lines = rows(5, seed=7)
    f = lines[1].split(",")
    f[2] = "1e39"
    lines[1] = ",".join(f)
    result = predict(str(write(tmp_path / "big.csv", lines)), str(tmp_path / "out.csv"), str(exported),
                     output_cols="probs double", reserved_cols="user")  # fmt: skip
    assert result["rows_written"] == 4 and result["rows_rejected"] == 1
    probs = [float(line.split("\x01")[0]) for line in (tmp_path / "out.csv").read_text().splitlines()[1:]]
    assert np.all(np.isfinite(probs))
    assert "\tline 2\tcolumn price: value is outside the float32 range" in (tmp_path / "out.csv.rejects").read_text()


# -- the reader ------------------------------------------------------------------------------
def reader_config(**extra) -> DataConfig:
    return DataConfig(input_fields=[{"input_name": "clk", "input_type": "INT32"}, {"input_name": "x", "input_type": "DOUBLE"},
                                    {"input_name": "n", "input_type": "INT64"}, {"input_name": "s"}],
                      label_fields=["clk"], **extra)  # fmt: skip


def read_all(path, **extra):
    reader = TableReader(reader_config(**extra))
    tables = list(reader.iter_tables([str(path)]))
    return pa.concat_tables(tables), reader.report


@pytest.mark.parametrize("value", ["1e39", "-3.5e38", "1e300"])
def test_values_beyond_float32_are_refused_with_file_line_column_value(tmp_path, value):
    path = tmp_path / "a.csv"
    path.write_text(f"1,2.5,1,a\n0,{value},2,b\n")
    with pytest.raises(FusionrecError, match=rf"a\.csv line 2, column 'x': '{value}' is outside the float32 range"):
        read_all(path)
    table, report = read_all(path, ignore_error=True)
    assert table.num_rows == 1 and report.n_skipped == 1


def test_non_utf8_line_is_skipped_and_counted_with_ignore_error(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"1,2.5,1,a\n0,1.5,2,caf\xe9\n1,1,3,c\n")
    with pytest.raises(FusionrecError, match=r"a\.csv line 2: bytes that are not UTF-8 text"):
        read_all(tmp_path / "a.csv")
    table, report = read_all(tmp_path / "a.csv", ignore_error=True)
    assert table.column("s").to_pylist() == ["a", "c"]
    assert report.as_dict()["skipped_by_reason"] == {"line is not UTF-8 text": 1}


def test_empty_numeric_fields_and_parquet_nulls_are_defaulted_and_counted(tmp_path):
    (tmp_path / "a.csv").write_text("1,,1,a\n0,2,,b\n1,,,\n")
    table, report = read_all(tmp_path / "a.csv")
    assert table.column("x").to_pylist() == [0.0, 2.0, 0.0]
    assert report.as_dict()["defaults_used"] == {"x": 2, "n": 2}
    pq.write_table(pa.table({"clk": [1, 0], "x": [None, 1.0], "n": [1, None], "s": ["a", None]}), tmp_path / "a.parquet")
    _, report = read_all(tmp_path / "a.parquet", input_type="ParquetInput")
    assert report.as_dict()["defaults_used"] == {"x": 1, "n": 1}


def test_blank_lines_bom_and_crlf_are_counted_and_parsed(tmp_path):
    (tmp_path / "a.csv").write_bytes(b"\xef\xbb\xbf1,1.5,1,a\r\n\r\n0,2,2,b\r\n\n\n1,3,3,c\r\n")
    table, report = read_all(tmp_path / "a.csv")
    assert table.column("clk").to_pylist() == [1, 0, 1] and table.column("s").to_pylist() == ["a", "b", "c"]
    assert report.as_dict()["blank_lines"] == 3
    assert report.as_dict()["files"][str(tmp_path / "a.csv")] == {"rows_used": 3, "rows_skipped": 0, "blank_lines": 3}


def test_line_numbers_count_blank_lines(tmp_path):
    (tmp_path / "a.csv").write_text("1,1,1,a\n\n\n0,oops,2,b\n")
    with pytest.raises(FusionrecError, match=r"a\.csv line 4, column 'x': 'oops' is not a number"):
        read_all(tmp_path / "a.csv")


def test_gzip_csv_is_read(tmp_path):
    import gzip

    with gzip.open(tmp_path / "a.csv.gz", "wt") as handle:
        handle.write("1,1,1,a\n0,2,2,b\n")
    table, _ = read_all(tmp_path / "a.csv.gz")
    assert table.num_rows == 2


def test_corrupt_parquet_names_the_file(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"clk": [1, 0] * 5000, "x": np.arange(10000.0), "n": np.arange(10000), "s": ["a"] * 10000}),
                   path, compression="snappy")  # fmt: skip
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 64] = b"\x00" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(FusionrecError, match=r"a\.parquet"):
        read_all(path, input_type="ParquetInput")
    path.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(FusionrecError, match=r"a\.parquet: cannot read as Parquet"):
        read_all(path, input_type="ParquetInput")


def test_parquet_float_column_for_an_integer_field_is_refused(tmp_path):
    pq.write_table(pa.table({"clk": [1, 0], "x": [1.0, 2.0], "n": [1.5, 2.0], "s": ["a", "b"]}), tmp_path / "a.parquet")
    with pytest.raises(FusionrecError, match=r"a\.parquet: column 'n' is Parquet type double, but its input field is INT64"):
        read_all(tmp_path / "a.parquet", input_type="ParquetInput")


MALFORMED = {
    "extra-field": b"1,1,1,a\n0,2,2,b,c\n",
    "non-utf8-and-short": b"1,1,1,a\n0,\xff\n",
    "all-bad": b"1,1\n2,2\n",
    "nul-bytes": b"1,1,1,a\x00\n\x00\x00\n",
    "control-byte": b"1,1,1,a\x1f\n",
    "huge-line": b"1,1,1," + b"a" * (9 << 20) + b"\n0,1,1,b\n",
    "only-newlines": b"\n\n\n",
}


def test_reader_on_malformed_files_never_aborts_the_interpreter(tmp_path):
    """Every malformed file is read (with ignore_error off and on) and its generator left open;
    the interpreter must still exit cleanly. One interpreter per ignore_error value reads all
    of them (each prints its file first, so a native abort names the file it died on)."""
    paths = []
    for name in sorted(MALFORMED):
        paths.append(tmp_path / f"{name}.csv")
        paths[-1].write_bytes(MALFORMED[name])
    script = (
        "import sys\n"
        "from fusionrec.ctr.config import DataConfig\n"
        "from fusionrec.ctr.data import TableReader\n"
        "from fusionrec.errors import FusionrecError\n"
        "config = DataConfig(input_fields=[{'input_name': 'clk', 'input_type': 'INT32'}, {'input_name': 'x', 'input_type': 'DOUBLE'},"
        " {'input_name': 'n', 'input_type': 'INT64'}, {'input_name': 's'}], label_fields=['clk'], ignore_error=bool(int(sys.argv[1])))\n"
        "open_readers = []\n"
        "for path in sys.argv[2:]:\n"
        "    print('reading', path, flush=True)\n"
        "    reader = TableReader(config)\n"
        "    try:\n"
        "        it = reader.iter_tables([path])\n"
        "        next(it)\n"
        "        open_readers.append(it)\n"  # left open: the interpreter must still exit cleanly
        "    except (FusionrecError, StopIteration) as error:\n"
        "        print(type(error).__name__, str(error)[:100])\n"
        "print('all read', flush=True)\n"
    )  # fmt: skip
    for ignore in ("0", "1"):
        done = subprocess.run([sys.executable, "-c", script, ignore, *map(str, paths)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (ignore, done.stdout[-2000:], done.stderr[-2000:])
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        assert done.stdout.count("reading ") == len(paths) and "all read" in done.stdout, done.stdout[-2000:]


# -- training --------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["", "clk,user,price,cat,hist_cat,hist_item\n", "x,u,1,a,,\ny,u,1,a,,\n", "\n\n"],
                         ids=["empty", "header-only", "all-rejected", "blank"])  # fmt: skip
def test_train_on_no_valid_rows_stops_with_an_error_not_a_hang(tmp_path, content):
    train = tmp_path / "train.csv"
    train.write_text(content)
    data = {"with_header": content.startswith("clk"), "ignore_error": True}
    trainer = Trainer(config_from_dict(small_config(tmp_path, train, **data)))
    with no_hang(), pytest.raises(FusionrecError, match=r"0 valid rows in .*train\.csv"):
        trainer.train(progress=False)


def test_train_value_beyond_float32_names_file_line_column(tmp_path):
    lines = rows(30)
    f = lines[20].split(",")
    f[2] = "1e39"
    lines[20] = ",".join(f)
    train = write(tmp_path / "train.csv", lines)
    trainer = Trainer(config_from_dict(small_config(tmp_path, train)))
    with pytest.raises(FusionrecError, match=r"train\.csv line 21, column 'price': '1e39' is outside the float32 range"):
        trainer.train(progress=False)


def test_parallel_history_lists_are_checked_before_truncation(tmp_path):
    lines = rows(16)
    f = lines[5].split(",")
    f[4] = "|".join(["a"] * 25)  # hist_cat: 25 values
    f[5] = "|".join(["1"] * 22)  # hist_item: 22 values; both longer than max_seq_len 3
    lines[5] = ",".join(f)
    config = small_config(tmp_path, write(tmp_path / "train.csv", lines), shuffle=False)
    config["model_config"]["seq_att_groups"][0]["seq_att_map"][0] = {"key": ["cat", "user"], "hist_seq": ["hist_cat", "hist_item"]}
    trainer = Trainer(config_from_dict(config))
    with pytest.raises(FusionrecError, match=r"train\.csv line 6, column 'hist_item': 22 values but 'hist_cat' has 25"):
        trainer.train(progress=False)
    config["data_config"]["ignore_error"] = True
    report = Trainer(config_from_dict(config)).train(progress=False)
    assert report["input"]["rows_skipped"] == 2  # the row, once per pass: 15 rows in batches of 8, step 3 opens pass 2
    assert report["eval"]["n_rows"] == 15



def test_train_and_eval_reports_count_everything(tmp_path):
    lines = rows(40) + ["", ""]
    lines[3] = lines[3].replace(",", ",,", 1)  # one field too many
    train = write(tmp_path / "train.csv", lines)
    trainer = Trainer(config_from_dict(small_config(tmp_path, train, ignore_error=True)))
    report = trainer.train(progress=False)
    model_dir = tmp_path / "model"
    for stage in ("train", "eval"):
        info = json.loads((model_dir / f"{stage}_input_report.json").read_text())
        assert info["rows_read"] == info["rows_used"] + info["rows_skipped"]
        assert info["blank_lines"] >= 2 and info["rows_skipped"] >= 1
        assert info["features"]["cat"]["out_of_vocabulary"] > 0 and info["features"]["hist_cat"]["truncated"] > 0
    assert report["input"]["skipped_by_reason"] == {"wrong number of fields (expected 6)": report["input"]["rows_skipped"]}


def test_disk_full_or_unwritable_model_dir_is_a_clear_error(tmp_path, monkeypatch):
    import errno
    import os

    config = small_config(tmp_path, write(tmp_path / "train.csv", rows(20)))
    (tmp_path / "a_file").write_text("")
    config["model_dir"] = str(tmp_path / "a_file" / "model")
    with pytest.raises(FusionrecError, match=r"model_dir .*a_file/model.*: .*a_file' is a file, not a directory"):
        Trainer(config_from_dict(config)).train(progress=False)

    def disk_full(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    config["model_dir"] = str(tmp_path / "model")
    trainer = Trainer(config_from_dict(config))
    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(FusionrecError, match=r"cannot write .*model\.ckpt-3\.pt: No space left on device"):
        trainer.train(progress=False)
    monkeypatch.undo()
    assert not list((tmp_path / "model").glob("*.tmp")) and not list((tmp_path / "model").glob(".*.tmp"))
