"""fusionrec serve without a pipeline: a bare `fusionrec ctr export` directory and a
`fusionrec gbdt` model file score what `fusionrec ctr predict` and `Booster.predict` score."""

import json

import numpy as np
import pyarrow.csv as pacsv
import pytest
from fastapi.testclient import TestClient

from fusionrec.ctr.config import load_config
from fusionrec.ctr.export import export, predict
from fusionrec.ctr.trainer import Trainer
from fusionrec.datasets import TAOBAO_COLUMNS, make_taobao
from fusionrec.errors import FusionrecError
from fusionrec.pipeline.scorers import kind_of, pinned_digest
from fusionrec.pipeline.server import ServerSettings, create_app
from tests.ctr.test_pipeline import WIDE_AND_DEEP, edits

from .helpers import ServerProcess, request


@pytest.fixture(scope="module")
def ctr_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctr_serve")
    make_taobao(600, seed=0, path=root / "train.csv")
    make_taobao(200, seed=1, path=root / "test.csv")
    trainer = Trainer(load_config(WIDE_AND_DEEP, edits(root, root / "model")))
    trainer.train(progress=False, evaluate_at_checkpoints=False)
    export(trainer, root / "export")
    return root


def _rows(path, n):
    table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=TAOBAO_COLUMNS),
                           convert_options=pacsv.ConvertOptions(column_types={c: "string" for c in TAOBAO_COLUMNS},
                                                                strings_can_be_null=False))  # fmt: skip
    rows = table.slice(0, n).to_pylist()
    for i, row in enumerate(rows):
        row["id"] = i
        del row["clk"], row["buy"]
    return rows


def test_a_bare_ctr_export_is_served_and_scores_what_predict_scores(ctr_export, tmp_path):
    assert kind_of(ctr_export / "export") == "ctr"
    client = TestClient(create_app(ServerSettings(saved_model_dir=str(ctr_export / "export"))), raise_server_exceptions=False)
    rows = _rows(ctr_export / "test.csv", 150)
    response = client.post("/predict", json={"rows": rows, "model_scores": True})
    assert response.status_code == 200, response.text
    answer = response.json()
    out = tmp_path / "scores.csv"
    predict(str(ctr_export / "test.csv"), str(out), str(ctr_export / "export"), output_sep=",")
    expected = pacsv.read_csv(out).column("probs").to_numpy()[:150]
    np.testing.assert_allclose(answer["scores"], expected, rtol=1e-5)  # float32 model; batch shapes change the last bits
    assert answer["model_scores"]["probs"] == answer["scores"] and answer["ids"] == list(range(150))
    # the labels and the fields no feature reads may be left out; a field a feature reads may not
    status = client.post("/predict", json=[{k: v for k, v in rows[0].items() if k != "user_id"}])
    assert status.status_code == 422 and "user_id" in status.json()["detail"]
    metadata = client.get("/metadata").json()
    assert metadata["kind"] == "ctr export" and metadata["export_digest"] == pinned_digest(ctr_export / "export")
    assert client.get("/health").json()["models"] == ["probs"]


def test_serve_starts_on_a_ctr_export_as_a_user_starts_it(ctr_export):
    with ServerProcess(ctr_export / "export") as process:
        status, body = request(process.url + "/predict", {"rows": _rows(ctr_export / "test.csv", 5)})
        assert status == 200 and len(json.loads(body)["scores"]) == 5, body


@pytest.fixture(scope="module")
def gbdt_model(tmp_path_factory):
    from fusionrec.gbdt import Dataset, train

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 4))
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1]) > 0).astype(float)
    booster = train({"objective": "binary:logistic", "max_depth": 3}, Dataset(X, y, feature_names=["a", "b", "c", "d"]), 20)
    path = tmp_path_factory.mktemp("gbdt_serve") / "model.json"
    booster.save_model(str(path))
    return path, booster, X


def test_a_gbdt_model_file_is_served_and_scores_what_predict_scores(gbdt_model):
    path, booster, X = gbdt_model
    assert kind_of(path) == "gbdt"
    client = TestClient(create_app(ServerSettings(saved_model_dir=str(path))), raise_server_exceptions=False)
    rows = [{name: (None if np.isnan(v) else float(v)) for name, v in zip("abcd", x)} for x in X[:50]]
    response = client.post("/predict", json={"rows": rows})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["scores"], booster.predict(X[:50]), rtol=1e-12)
    csv_body = "d,c,b,a\n" + "\n".join(",".join("" if np.isnan(x[j]) else repr(float(x[j])) for j in (3, 2, 1, 0)) for x in X[:5])
    response = client.post("/predict", content=csv_body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["scores"], booster.predict(X[:5]), rtol=1e-12)
    bad = client.post("/predict", json=[rows[0], {**rows[1], "c": "lots"}])
    assert bad.status_code == 422 and "row 2, column 'c'" in bad.json()["detail"] and "'lots'" in bad.json()["detail"]
    assert client.get("/metadata").json()["required_fields"] == ["a", "b", "c", "d"]


def test_what_serve_cannot_serve_is_named(tmp_path):
    with pytest.raises(FusionrecError, match="no manifest.json .*fusionrec ctr export"):
        kind_of(tmp_path)
    with pytest.raises(FusionrecError, match="no such directory or model file"):
        kind_of(tmp_path / "nothing")
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(FusionrecError):
        create_app(ServerSettings(saved_model_dir=str(tmp_path / "model.json"), allow_missing_checksums=True))


def _job(body: dict, timeout: float = 30.0):
    import time

    from fusionrec.pipeline.server import ScoringJob

    return ScoringJob(json.dumps(body).encode(), "application/json", time.monotonic() + timeout, timeout)


def test_requests_scored_together_get_what_each_gets_alone(ctr_export):
    """Dynamic batching: jobs that waited together are typed and scored as one table, and each
    gets its own answer: its scores, its ids, its request_id; a bad value answers its own
    request 422 (naming its row) and leaves the others scored; an expired job gets its 408."""
    from fusionrec.pipeline.scorers import open_scorer
    from fusionrec.pipeline.server import JobRunner

    runner = JobRunner(open_scorer(ctr_export / "export"), max_rows=10_000)
    rows = _rows(ctr_export / "test.csv", 60)
    bodies = [{"rows": rows[:7], "request_id": "a"}, {"rows": rows[7:30], "model_scores": True}, {"rows": rows[30:31]},
              {"rows": rows[31:60], "request_id": 4}]  # fmt: skip
    alone = [runner.run_batch([_job(b)])[0] for b in bodies]
    together = runner.run_batch([_job(b) for b in bodies])
    for (status_alone, answer_alone), (status, answer) in zip(alone, together):
        assert status_alone == status == 200
        assert answer.keys() == answer_alone.keys() and answer["ids"] == answer_alone["ids"]
        np.testing.assert_allclose(answer["scores"], answer_alone["scores"], rtol=1e-5)  # batch shapes change the last bits
    assert together[0][1]["request_id"] == "a" and together[3][1]["request_id"] == 4
    assert "model_scores" in together[1][1] and "model_scores" not in together[0][1]

    bad = [dict(r) for r in rows[:5]]
    bad[3]["price"] = "not a number"
    expired = _job({"rows": rows[:3]}, timeout=-1.0)
    mixed = runner.run_batch([_job({"rows": rows[:4]}), _job({"rows": bad}), expired, _job({"rows": rows[4:9]}), _job([1])])
    assert [status for status, _ in mixed] == [200, 422, 408, 200, 422]
    assert "row 4" in mixed[1][1]["detail"] and "price" in mixed[1][1]["detail"]
    np.testing.assert_allclose(mixed[0][1]["scores"], alone[0][1]["scores"][:4], rtol=1e-5)
    np.testing.assert_allclose(mixed[3][1]["scores"], alone[0][1]["scores"][4:7] + alone[1][1]["scores"][:2], rtol=1e-5)


def test_concurrent_requests_each_get_their_own_rows_scores(ctr_export):
    """As many clients at once as a worker admits (max_pending 8) through the HTTP server (one
    scoring thread: requests queue and are batched): every answer carries its own ids and the
    scores its rows get alone."""
    from concurrent.futures import ThreadPoolExecutor

    rows = _rows(ctr_export / "test.csv", 120)
    with ServerProcess(ctr_export / "export") as process:
        status, body = request(process.url + "/predict", {"rows": rows})
        reference = json.loads(body)["scores"]

        def call(k):
            part = rows[k * 10 : k * 10 + 10]
            return request(process.url + "/predict", {"rows": part, "request_id": k})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(call, range(12)))
    for k, (status, body) in enumerate(answers):
        answer = json.loads(body)
        assert status == 200 and answer["request_id"] == k and answer["ids"] == list(range(k * 10, k * 10 + 10))
        np.testing.assert_allclose(answer["scores"], reference[k * 10 : k * 10 + 10], rtol=1e-5)
