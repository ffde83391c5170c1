"""EasyRec's multi-modal models (CMBF, Uniter) and their transformer parts."""

import pyarrow as pa
import pytest
import torch

from fusionrec.ctr.config import config_from_dict
from fusionrec.ctr.data import table_to_columns
from fusionrec.ctr.features import FeatureTransform
from fusionrec.ctr.models import build_model
from fusionrec.ctr.modules.transformer import MultiHeadAttention, masked_mean
from fusionrec.errors import FusionrecError


def test_multi_head_attention_is_scaled_dot_product_attention_over_unmasked_positions():
    torch.manual_seed(0)
    attention = MultiHeadAttention(6, 5, n_heads=2, head_size=4, attention_dropout=0.0)
    x, y = torch.randn(3, 4, 6), torch.randn(3, 7, 5)
    mask = torch.arange(7).unsqueeze(0) < torch.tensor([[7], [2], [5]])
    got = attention(x, y, mask)
    q = attention.query(x).view(3, 4, 2, 4).transpose(1, 2)
    k = attention.key(y).view(3, 7, 2, 4).transpose(1, 2)
    v = attention.value(y).view(3, 7, 2, 4).transpose(1, 2)
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    torch.testing.assert_close(got, reference.transpose(1, 2).reshape(3, 4, 8), atol=1e-5, rtol=1e-5)


def test_masked_mean_ignores_padding_and_gives_zeros_for_empty_rows():
    x = torch.arange(12.0).view(2, 3, 2)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    torch.testing.assert_close(masked_mean(x, mask), torch.tensor([[1.0, 2.0], [0.0, 0.0]]))


def movielens_config(model: str, groups=("image", "general", "text", "other")):
    features = [
        {"input_names": ["user_id"], "hash_bucket_size": 100, "embedding_dim": 8},
        {"input_names": ["age"], "num_buckets": 7, "embedding_dim": 8},
        {"input_names": ["title"], "feature_type": "SequenceFeature", "separator": " ", "hash_bucket_size": 50,
         "embedding_dim": 8, "max_seq_len": 6},
        {"input_names": ["genres"], "feature_type": "SequenceFeature", "separator": "|", "hash_bucket_size": 20,
         "embedding_dim": 8, "max_seq_len": 4},
        {"input_names": ["image"], "feature_type": "RawFeature", "raw_input_dim": 12, "separator": "|"},
        {"input_names": ["score"], "feature_type": "RawFeature"},
    ]  # fmt: skip
    all_groups = {"image": ["image"], "general": ["user_id", "age"], "text": ["title", "genres"], "other": ["score"]}
    block = {
        "CMBF": {"cmbf": {"config": {"multi_head_num": 2, "text_multi_head_num": 2, "text_head_size": 4, "image_head_size": 4,
                                     "image_multi_head_num": 2, "image_feature_dim": 6, "image_self_attention_layer_num": 1,
                                     "text_self_attention_layer_num": 1, "cross_modal_layer_num": 2,
                                     "image_cross_head_size": 4, "text_cross_head_size": 4, "max_position_embeddings": 8,
                                     "use_token_type": True, "text_seq_emb_dropout_prob": 0.0,
                                     "other_feature_dnn": {"hidden_units": [4]}},
                          "final_dnn": {"hidden_units": [8]}}},
        "Uniter": {"uniter": {"config": {"hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
                                         "intermediate_size": 16, "hidden_act": "swish", "max_position_embeddings": 8,
                                         "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
                              "final_dnn": {"hidden_units": [8]}}},
    }[model]  # fmt: skip
    fields = ["label", "user_id", "age", "title", "genres", "image", "score"]
    types = {"label": "INT32", "age": "INT32", "score": "DOUBLE"}
    return config_from_dict({
        "data_config": {"input_fields": [{"input_name": f, "input_type": types.get(f, "STRING")} for f in fields],
                        "label_fields": ["label"]},
        "feature_configs": features,
        "model_config": {"model_class": model, "feature_groups": [{"group_name": g, "feature_names": all_groups[g]} for g in groups],
                         **block},
    })  # fmt: skip


ROWS = {
    "label": [1, 0, 1], "user_id": ["u1", "u2", "u3"], "age": [3, 5, 1],
    "title": ["a b c d e f", "a", "x y"], "genres": ["g1|g2|g3", "", "g2"],
    "image": [[0.1 * i for i in range(12)], [0.5] * 12, [-0.2 * i for i in range(12)]], "score": [0.3, 0.9, 0.1],
}  # fmt: skip


def score(model, transform, config, rows):
    table = pa.table({k: (pa.array(v, pa.list_(pa.float64(), 12)) if k == "image" else v) for k, v in rows.items()})
    fields = [f for f in config.data_config.input_fields if f.input_name != "label"]
    with torch.no_grad():
        return model(transform(table_to_columns(table, fields)))


@pytest.mark.parametrize("model_class", ["CMBF", "Uniter"])
@pytest.mark.parametrize("groups", [("image", "general", "text", "other"), ("image",), ("general", "text"), ("text", "other")])
def test_a_rows_score_does_not_depend_on_the_padding_of_the_batch(model_class, groups):
    """Masks at work: row 1 (a one-token title, an empty genres list) scores the same alone as in a
    batch whose other rows pad its sequences to six and three positions."""
    torch.manual_seed(1)
    config = movielens_config(model_class, groups)
    transform = FeatureTransform(config)
    model = build_model(config, transform).eval()
    together = score(model, transform, config, ROWS)
    alone = score(model, transform, config, {k: v[1:2] for k, v in ROWS.items()})
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-5)
    assert together.shape == (3,) and len(set(together.tolist())) == 3
    scripted = torch.jit.script(model)
    torch.testing.assert_close(score(scripted, transform, config, ROWS), together)


def test_cmbf_needs_max_position_embeddings_for_every_text_sequence():
    config = movielens_config("CMBF")
    config.model_config_.cmbf.config.max_position_embeddings = 4
    with pytest.raises(FusionrecError, match=r"max_position_embeddings \(4\) must be at least every text feature's max_seq_len"):
        build_model(config, FeatureTransform(config))
