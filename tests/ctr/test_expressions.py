"""EasyRec's ExprFeature: expressions parsed without eval, run in TorchScript, equal to Python's value."""

import pytest
import torch

from fusionrec.ctr.expressions import compile_expression
from fusionrec.ctr.features import run_expression

EXPRESSIONS = [
    "age_level>=1", "age_level<(item_age_level+5)", "age_level==item_age_level",
    "(age_level>=item_age_level) & (age_level<=(item_age_level+5))", "(age_level>=item_age_level) | (age_level>5)",
    "-age_level * 2.5 - item_age_level / 4", "~(age_level != 3)", "+age_level",
]  # fmt: skip


def run(text, a, b):
    program = compile_expression(text, ["age_level", "item_age_level"])
    return run_expression(torch.tensor(program.opcodes), torch.tensor(program.operands),
                          torch.tensor(program.constants + [0.0], dtype=torch.float64),
                          [torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)])  # fmt: skip


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_expression_equals_pythons_value_per_row(text, rng):
    a, b = rng.integers(0, 9, 50).astype(float), rng.integers(0, 9, 50).astype(float)
    got = run(text, a, b).numpy()
    for i in range(50):  # Python's own evaluation of the same text, one row at a time, truth values as 0 / 1
        env = {"age_level": a[i], "item_age_level": b[i]}
        expected = eval(text.replace("~", "not "), {}, env)  # noqa: S307 (a test's reference only)
        assert got[i] == pytest.approx(float(expected)), (text, a[i], b[i])


def test_scripted_transform_runs_expressions():
    scripted = torch.jit.script(run_expression)
    program = compile_expression("x / y", ["x", "y"])
    value = scripted(torch.tensor(program.opcodes), torch.tensor(program.operands), torch.tensor([0.0], dtype=torch.float64),
                     [torch.tensor([1.0, 1.0]), torch.tensor([2.0, 0.0])])  # fmt: skip
    assert value[0] == 0.5 and bool(torch.isinf(value[1]))


@pytest.mark.parametrize("text, message", [
    ("log(age_level)", "'log\\(age_level\\)' is not supported"),
    ("age_level.real", "is not supported"),
    ("1 < age_level < 5", "is not supported"),
    ("price > 3", "'price' is not one of the feature's input_names"),
    ("age_level >", "not a valid expression"),
    ("'a' == age_level", "is not supported"),
])  # fmt: skip
def test_unsupported_expressions_are_refused_by_name(text, message):
    with pytest.raises(ValueError, match=message):
        compile_expression(text, ["age_level", "item_age_level"])


def test_expr_feature_sets_non_finite_values_to_zero_and_counts_them():
    import pyarrow as pa

    from fusionrec.ctr.config import InputField, config_from_dict
    from fusionrec.ctr.data import table_to_columns
    from fusionrec.ctr.features import FeatureTransform, feature_counts

    config = config_from_dict({
        "data_config": {"input_fields": [{"input_name": "y", "input_type": "INT32"}, {"input_name": "clicks", "input_type": "INT64"},
                                         {"input_name": "views", "input_type": "DOUBLE"}], "label_fields": ["y"]},
        "feature_configs": [{"feature_name": "ctr", "input_names": ["clicks", "views"], "feature_type": "ExprFeature",
                             "expression": "clicks / views"}],
        "model_config": {"model_class": "DeepFM", "feature_groups": [{"group_name": "deep", "feature_names": ["ctr"]}],
                         "deepfm": {"dnn": {"hidden_units": [4]}}},
    })  # fmt: skip
    fields = [InputField(input_name="clicks", input_type="INT64"), InputField(input_name="views", input_type="DOUBLE")]
    table = pa.table({"clicks": pa.array([1, 0, 3], pa.int64()), "views": [4.0, 0.0, 0.0]})
    out = torch.jit.script(FeatureTransform(config))(table_to_columns(table, fields))
    assert out["ctr"].squeeze(1).tolist() == [0.25, 0.0, 0.0]
    assert int(feature_counts(out)["ctr.not_finite"]) == 2
