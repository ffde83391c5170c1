"""One pipeline: boosted trees and deep CTR models on the same click logs, fused out of
fold, exported as one artifact that ``predict`` and the HTTP server score."""

_EXPORTS = {
    "PipelineScorer": "fusionrec.pipeline.artifact",
    "export_run": "fusionrec.pipeline.artifact",
    "predict_pipeline": "fusionrec.pipeline.artifact",
    "PipelineSpec": "fusionrec.pipeline.config",
    "load_pipeline": "fusionrec.pipeline.config",
    "PipelineRun": "fusionrec.pipeline.run",
}


def __getattr__(name: str):
    # the scorer and the runs import torch (3 s): only when asked for, so that the server's
    # supervisor, which pins an export and loads no model, starts without it (PEP 562)
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fusionrec.pipeline' has no attribute {name!r}")


__all__ = ["PipelineRun", "PipelineScorer", "PipelineSpec", "export_run", "load_pipeline", "predict_pipeline"]
