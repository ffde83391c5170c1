"""Input errors name file, line, column and value; ignore_error skips and counts."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusionrec.ctr.config import DataConfig
from fusionrec.ctr.data import TableReader, iter_batches, resolve_paths
from fusionrec.errors import FusionrecError


def config(**extra):
    fields = [{"input_name": "clk", "input_type": "INT32"}, {"input_name": "user", "input_type": "STRING", "default_val": "anon"},
              {"input_name": "price", "input_type": "DOUBLE", "default_val": "1.5"}]  # fmt: skip
    return DataConfig(input_fields=fields, label_fields=["clk"], **extra)


def read(path, **extra):
    reader = TableReader(config(**extra))
    tables = list(reader.iter_tables([str(path)]))
    return (pa.concat_tables(tables) if tables else None), reader


def test_empty_fields_take_default_val(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("1,u1,2.0\n0,,\n")
    table, _ = read(path)
    assert table.column("user").to_pylist() == ["u1", "anon"] and table.column("price").to_pylist() == [2.0, 1.5]


@pytest.mark.parametrize(
    "line, message",
    [
        ("1,u3", r"a\.csv line 3: 2 fields, expected 3"),
        ("1,u3,cheap", r"a\.csv line 3, column 'price': 'cheap' is not a number"),
        ("x,u3,1", r"a\.csv line 3, column 'clk': 'x' is not an integer"),
        ("2,u3,1", r"a\.csv line 3, column 'clk': '2' is not a binary label"),
        (",u3,1", r"a\.csv line 3, column 'clk': '' label is empty \(labels are never imputed\)"),
        ("3000000000,u3,1", r"line 3, column 'clk': '3000000000' is outside the INT32 range"),
    ],
)
def test_bad_rows_stop_with_file_line_column_value(tmp_path, line, message):
    path = tmp_path / "a.csv"
    path.write_text(f"1,u1,2.0\n0,u2,1\n{line}\n1,u4,3\n")
    with pytest.raises(FusionrecError, match=message):
        read(path)


def test_ignore_error_skips_and_counts_by_reason(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("1,u1,2.0\n1,u2\n0,u3,abc\n1,u4,1\n0,u5,xyz\n")
    table, reader = read(path, ignore_error=True)
    assert table.num_rows == 2
    report = reader.report.as_dict()
    assert report["rows_read"] == 5 and report["rows_used"] == 2 and report["rows_skipped"] == 3
    assert report["skipped_by_reason"]["column price: value is not a number (DOUBLE)"] == 2


def test_parquet_input_and_header_csv(tmp_path):
    pq.write_table(pa.table({"clk": [1, 0], "user": ["a", None], "price": [1.0, 2.0], "extra": [1, 2]}), tmp_path / "a.parquet")
    table, _ = read(tmp_path / "a.parquet", input_type="ParquetInput")
    assert table.column("user").to_pylist() == ["a", "anon"]
    (tmp_path / "h.csv").write_text("price,user,clk\n2.5,z,1\n")
    table, _ = read(tmp_path / "h.csv", with_header=True)
    assert table.column("price").to_pylist() == [2.5] and table.column("clk").to_pylist() == [1]


def test_paths_files_lists_and_globs(tmp_path):
    for name in ("b.csv", "a.csv"):
        (tmp_path / name).write_text("1,u,1\n")
    assert resolve_paths(f"{tmp_path}/*.csv") == [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    assert resolve_paths(f"{tmp_path}/b.csv,{tmp_path}/a.csv") == [str(tmp_path / "b.csv"), str(tmp_path / "a.csv")]
    with pytest.raises(FusionrecError, match="matches no file"):
        resolve_paths(f"{tmp_path}/*.tsv")
    with pytest.raises(FusionrecError, match="no such file"):
        resolve_paths(f"{tmp_path}/c.csv")


def test_batches_cover_every_row_once_with_shuffle(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("".join(f"{i % 2},u{i},{i}\n" for i in range(1000)))
    reader = TableReader(config())
    seen = []
    for batch in iter_batches(reader, [str(path)], 64, shuffle=True, shuffle_rows=300, seed=1):
        assert len(batch.labels) <= 64
        seen.extend(batch.table.column("price").to_pylist())
    assert sorted(seen) == list(range(1000)) and seen != list(range(1000))


@pytest.mark.parametrize(
    "line, message",
    [
        ("1,u3,1e400", r"line 3, column 'price': '1e400' is not a finite number"),
        ("1,u3,inf", r"'inf' is not a finite number"),
    ],
)
def test_overflow_and_non_finite_values_are_refused(tmp_path, line, message):
    path = tmp_path / "a.csv"
    path.write_text(f"1,u1,2.0\n0,u2,1\n{line}\n")
    with pytest.raises(FusionrecError, match=message):
        read(path)


def test_int64_overflow_and_duplicate_header(tmp_path):
    fields = [{"input_name": "clk", "input_type": "INT32"}, {"input_name": "id", "input_type": "INT64"}]
    reader = TableReader(DataConfig(input_fields=fields, label_fields=["clk"]))
    path = tmp_path / "a.csv"
    path.write_text("1,9223372036854775807\n0,99999999999999999999\n")
    with pytest.raises(FusionrecError, match=r"line 2, column 'id': '99999999999999999999' is outside the INT64 range"):
        list(reader.iter_tables([str(path)]))
    (tmp_path / "h.csv").write_text("clk,id,id\n1,2,3\n")
    reader = TableReader(DataConfig(input_fields=fields, label_fields=["clk"], with_header=True))
    with pytest.raises(FusionrecError, match=r"header names \['id'\] appear more than once"):
        list(reader.iter_tables([str(tmp_path / "h.csv")]))


def test_empty_file_trains_on_nothing_is_an_error(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(FusionrecError, match=r"0 valid rows in .*e\.csv \(no data rows\)"):
        read(tmp_path / "e.csv")
