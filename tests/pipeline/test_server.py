"""fusionrec serve: a real server process scores what predict scores; fuzzing never gets a 5xx."""

import json

import numpy as np
import pyarrow.csv as pacsv
import pytest
from fastapi.testclient import TestClient

from fusionrec.pipeline import predict_pipeline
from fusionrec.pipeline.server import ServerSettings, create_app

from .helpers import NAMES, ServerProcess, json_rows, request


@pytest.fixture(scope="module")
def server(trained_pipeline):
    """The server started as a user starts it: `fusionrec serve`, two workers."""
    with ServerProcess(trained_pipeline["export"], "--workers", "2", "--max_rows", "500") as process:
        yield process.url


def test_the_server_scores_what_predict_scores(server, trained_pipeline, tmp_path):
    rows = json_rows(trained_pipeline["test"], 100)
    status, body = request(server + "/predict", {"rows": rows, "model_scores": True, "request_id": "abc"})
    assert status == 200, body
    answer = json.loads(body)
    out = tmp_path / "scores.csv"
    predict_pipeline(str(trained_pipeline["test"]), str(out), str(trained_pipeline["export"]), model_scores=True, output_sep=",")
    expected = pacsv.read_csv(out).slice(0, 100)
    np.testing.assert_allclose(answer["scores"], expected.column("probs").to_numpy(), rtol=1e-6)  # the deep models compute in float32; batch shapes change the last bits
    np.testing.assert_allclose(answer["model_scores"]["leaf_wide_and_deep"], expected.column("probs_leaf_wide_and_deep").to_numpy(), rtol=1e-6)  # the deep models compute in float32; batch shapes change the last bits
    assert answer["ids"] == [f"r{i}" for i in range(100)] and answer["request_id"] == "abc"
    # a CSV body, rows in another column order, scores the same
    header = list(reversed(NAMES[1:]))
    csv_body = "\n".join([",".join(["id", *header])] + [",".join([r["id"], *(str(r[c]) for c in header)]) for r in rows[:10]])
    status, body = request(server + "/predict", csv_body.encode(), "text/csv")
    assert status == 200, body
    np.testing.assert_allclose(json.loads(body)["scores"], answer["scores"][:10], rtol=1e-6)  # the deep models compute in float32; batch shapes change the last bits
    # one row alone scores as in its batch
    status, body = request(server + "/predict", [rows[5]])
    assert json.loads(body)["scores"][0] == pytest.approx(answer["scores"][5], rel=1e-6)


def test_health_metadata_and_metrics(server):
    assert request(server + "/health")[0] == 200
    status, body = request(server + "/metadata")
    metadata = json.loads(body)
    assert [m["name"] for m in metadata["models"]] == ["trees", "wide_and_deep", "leaf_wide_and_deep"]
    assert metadata["fusion"]["kind"] == "stacking" and "buy" not in metadata["required_fields"]
    request(server + "/predict", b"{nope")
    status, body = request(server + "/metrics")
    text = body.decode()
    assert status == 200 and "fusionrec_predict_latency_seconds_bucket" in text
    assert 'fusionrec_errors_total{kind="bad_json"}' in text and "fusionrec_predict_rows_total" in text


@pytest.fixture(scope="module")
def client(trained_pipeline):
    app = create_app(ServerSettings(saved_model_dir=str(trained_pipeline["export"]), max_body_bytes=20_000, max_rows=20))
    return TestClient(app, raise_server_exceptions=False)


def test_bad_requests_name_the_row_the_column_and_the_rule(client, trained_pipeline):
    row = json_rows(trained_pipeline["test"], 1)[0]
    cases = [
        ({**row, "price": "cheap"}, 422, "request row 1, column 'price': 'cheap' is not an integer (INT32)"),
        ({**row, "price": 2**40}, 422, "outside the INT32 range"),
        ({**row, "user_id": {"a": 1}}, 422, "row 1, column 'user_id': a dict is not a field value"),
        ({k: v for k, v in row.items() if k != "user_id"}, 422, "row 1: no field ['user_id']"),
    ]
    for bad, status, message in cases:
        response = client.post("/predict", json={"rows": [row, bad]})
        assert response.status_code == status and message.replace("row 1", "row 2") in response.json()["detail"], response.text
    assert client.post("/predict", json={"rows": [row] * 21}).status_code == 413
    assert client.post("/predict", content=b"x" * 30_000, headers={"content-type": "application/json"}).status_code == 413
    assert client.post("/predict", content=b"a=1", headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 415
    assert client.post("/predict", json={"rows": []}).json() == {"scores": [], "ids": []}
    no_buy = {k: v for k, v in row.items() if k != "buy"}  # a field no model reads may be left out
    assert client.post("/predict", json=[no_buy]).status_code == 200


def fuzz_bodies(rng, row):
    """Random and malformed requests: JSON of every shape, broken JSON and CSV, odd headers and sizes."""
    scalars = [None, True, 0, -1, 2**70, 1.5, 1e308, "", "x" * 300, "é\u0000", "1|2||", "nan", "-0", [], {}, [1, [2]]]
    keys = list(row)
    for _ in range(400):
        kind = rng.integers(0, 9)
        content_type = "application/json"
        if kind == 0:
            body = bytes(rng.integers(0, 256, rng.integers(0, 400), dtype=np.uint8))
        elif kind == 1:
            body = json.dumps(scalars[rng.integers(len(scalars))]).encode()
        elif kind == 2:
            mutated = dict(row)
            for key in rng.choice(keys, rng.integers(1, 4)):
                mutated[str(key)] = scalars[rng.integers(len(scalars))]
            body = json.dumps({"rows": [mutated, row]}).encode()
        elif kind == 3:
            text = json.dumps({"rows": [row]})
            cut = rng.integers(0, len(text))
            body = (text[:cut] + text[cut + 1 :]).encode()
        elif kind == 4:
            body = json.dumps({"rows": [row], "model_scores": scalars[rng.integers(len(scalars))], "extra": 1}).encode()
        elif kind == 5:
            content_type = "text/csv"
            lines = [",".join(keys), ",".join(str(row[k]) for k in keys)]
            line = lines[rng.integers(0, 2)]
            lines.append(line[: rng.integers(0, len(line) + 1)] + ',"' * int(rng.integers(0, 2)))
            body = "\n".join(lines).encode()
        elif kind == 6:
            content_type = ["text/plain", "application/xml", "", "application/json; charset=latin-1", "text/csv; x=1"][rng.integers(0, 5)]
            body = json.dumps([row]).encode()
        elif kind == 7:
            body = json.dumps({"rows": [row] * int(rng.integers(18, 24))}).encode()
        else:
            body = json.dumps({"rows": [{**row, "price": float(rng.normal() * 1e9)}]}).encode()
        yield body, content_type


def test_fuzzing_gets_no_5xx_and_the_server_keeps_serving(client, trained_pipeline):
    rng = np.random.default_rng(7)
    row = json_rows(trained_pipeline["test"], 1)[0]
    statuses = []
    for body, content_type in fuzz_bodies(rng, row):
        response = client.post("/predict", content=body, headers={"content-type": content_type} if content_type else {})
        statuses.append(response.status_code)
        assert response.status_code < 500, (body[:200], response.text)
        if response.status_code >= 400:
            assert response.json()["detail"]
    assert 200 in statuses and 422 in statuses and 400 in statuses and 413 in statuses and 415 in statuses
    assert client.post("/predict", json=[row]).status_code == 200


def test_a_request_over_the_time_limit_is_a_408(trained_pipeline):
    app = create_app(ServerSettings(saved_model_dir=str(trained_pipeline["export"]), timeout_seconds=1e-6))
    client = TestClient(app, raise_server_exceptions=False)
    rows = json_rows(trained_pipeline["test"], 200)
    response = client.post("/predict", json={"rows": rows})
    assert response.status_code == 408 and "timeout_seconds" in response.json()["detail"]
    assert client.get("/health").status_code == 200


def test_serve_refuses_a_broken_export_before_starting(tmp_path, capsys):
    from fusionrec.cli import main

    assert main(["serve", "--saved_model_dir", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_csv_values_are_text_as_in_files(client, trained_pipeline):
    """A CSV body's ids keep their leading zeros: "007" is not the id "7"."""
    row = json_rows(trained_pipeline["test"], 1)[0]
    names = [n for n in NAMES if n != "clk"]
    for user in ("007", "7"):
        csv_body = ",".join(["id", *names]) + "\n" + ",".join(["x", *(user if n == "user_id" else str(row[n]) for n in names)])
        via_csv = client.post("/predict", content=csv_body.encode(), headers={"content-type": "text/csv"}).json()["scores"]
        via_json = client.post("/predict", json=[{**row, "user_id": user}]).json()["scores"]
        assert via_csv == via_json
    scores = [client.post("/predict", json=[{**row, "user_id": u}]).json()["scores"][0] for u in ("007", "7")]
    assert scores[0] != scores[1]
