"""The shipped pipeline configs run unchanged on small generated click logs."""

from pathlib import Path

import numpy as np
import pytest

from fusionrec.datasets import make_taobao
from fusionrec.pipeline import PipelineRun, PipelineScorer, load_pipeline

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipeline"


def test_the_text_format_example_is_the_yaml_example():
    yaml_spec, _ = load_pipeline(EXAMPLES / "taobao_pipeline.yaml")
    text_spec, _ = load_pipeline(EXAMPLES / "taobao_pipeline.config")
    assert yaml_spec.model_dump() == text_spec.model_dump()


@pytest.mark.parametrize("name", ["taobao_pipeline.yaml"])
def test_example_pipeline_trains_exports_and_scores(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example's data paths are relative to the working directory, as EasyRec's
    make_taobao(2400, 0, "data/taobao_train_data", n_users=500, n_ads=300)
    make_taobao(600, 1, "data/taobao_test_data", n_users=500, n_ads=300)
    run = PipelineRun.from_config(EXAMPLES / name)
    result = run.train()
    assert set(result["test"]) == {"trees", "wide_and_deep", "din", "leaf_wide_and_deep", "fusion"}
    scorer = PipelineScorer(tmp_path / "experiments" / "taobao_pipeline" / "export")
    reader = scorer.reader()
    typed = next(reader.iter_tables(["data/taobao_test_data"]))
    scores, fused = scorer.score(typed)
    assert scores.shape == (600, 4) and np.all((fused > 0) & (fused < 1))
