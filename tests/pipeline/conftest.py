import copy

import pytest

from fusionrec.pipeline import PipelineRun

from .helpers import TREES, WIDE_AND_DEEP, make_logs, pipeline_dict, write_yaml


@pytest.fixture(scope="session")
def trained_pipeline(tmp_path_factory):
    """Trees, a Wide&Deep and a Wide&Deep on the trees' leaves, stacked and exported (small and quick)."""
    root = tmp_path_factory.mktemp("pipeline")
    train, test = make_logs(root / "logs", 2400, 600)
    models = [{"name": "trees", "gbdt": copy.deepcopy(TREES)},
              {"name": "wide_and_deep", "ctr": copy.deepcopy(WIDE_AND_DEEP)},
              {"name": "leaf_wide_and_deep", "leaf_features": {"trees": "trees", "inner_folds": 2, "ctr": copy.deepcopy(WIDE_AND_DEEP)}}]  # fmt: skip
    document = pipeline_dict(train, test, root / "run", models=models)
    document["split"] = {"k_folds": 2}
    config = write_yaml(root / "pipeline.yaml", document)
    run = PipelineRun.from_config(config)
    result = run.train()
    return {"run": run, "result": result, "train": train, "test": test, "config": config, "export": run.run_dir / "export"}
