"""One pipeline: boosted trees and deep CTR models on the same click logs, fused out of
fold, exported as one artifact that ``predict`` and the HTTP server score."""

from fusionrec.pipeline.artifact import PipelineScorer, export_run, predict_pipeline
from fusionrec.pipeline.config import PipelineSpec, load_pipeline
from fusionrec.pipeline.run import PipelineRun

__all__ = ["PipelineRun", "PipelineScorer", "PipelineSpec", "export_run", "load_pipeline", "predict_pipeline"]
