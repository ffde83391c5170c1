"""The shipped pipeline configs: the text-format example is the YAML example. The YAML example
itself runs unchanged, end to end (train, export, predict, serve), on small generated click logs
in tests/test_cli.py::test_demo_runs_on_small_data: examples/demo.py ends with it."""

from pathlib import Path

from fusionrec.pipeline import load_pipeline

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipeline"


def test_the_text_format_example_is_the_yaml_example():
    yaml_spec, _ = load_pipeline(EXAMPLES / "taobao_pipeline.yaml")
    text_spec, _ = load_pipeline(EXAMPLES / "taobao_pipeline.config")
    assert yaml_spec.model_dump() == text_spec.model_dump()


def test_every_example_pipeline_config_is_run_by_a_test():
    # taobao_pipeline.yaml (and its .config twin, equal above) run in the demo's test; a new
    # example needs a run of its own here
    assert sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".yml", ".config")) == [
        "taobao_pipeline.config", "taobao_pipeline.yaml"]  # fmt: skip
