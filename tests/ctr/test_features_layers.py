"""Feature kernels against plain-Python references; layers for shapes, masks and formulas."""

import pyarrow as pa
import pytest
import torch

from fusionrec.ctr.data import table_to_columns
from fusionrec.ctr.config import InputField
from fusionrec.ctr.features import hash_strings, pad_tokens, split_tokens
from fusionrec.ctr.modules.autoint import InteractingLayer
from fusionrec.ctr.modules.cross import CrossNet, CrossNetV2
from fusionrec.ctr.modules.din import DINAttention
from fusionrec.ctr.modules.dropout import VariationalDropout
from fusionrec.ctr.modules.fm import FactorizationMachine
from fusionrec.ctr.modules.mlp import MLP


def fnv1a_reference(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def columns_of(values):
    return table_to_columns(pa.table({"s": pa.array(values, pa.string())}), [InputField(input_name="s")])


def test_string_hash_matches_fnv1a_reference():
    values = ["", "a", "hello", "430548_1", "ünïcode ✓", "x" * 40]
    cols = columns_of(values)
    got = hash_strings(cols["s.bytes"], cols["s.offsets"]).tolist()
    assert got == [fnv1a_reference(v.encode()) for v in values]


@pytest.mark.parametrize("max_len", [0, 2])
def test_split_and_pad_keep_the_most_recent_tokens(max_len):
    values = ["1|2|3", "", "4", "5||6|", "|7"]
    cols = columns_of(values)
    starts, lengths, rows = split_tokens(cols["s.bytes"], cols["s.offsets"], ord("|"))
    data = bytes(cols["s.bytes"].tolist())
    tokens = [data[s : s + n].decode() for s, n in zip(starts.tolist(), lengths.tolist())]
    expected = [[t for t in v.split("|") if t] for v in values]
    assert tokens == [t for row in expected for t in row]
    ids = torch.tensor([int(t) for t in tokens])
    padded, mask, lengths = pad_tokens(ids, rows, len(values), max_len)
    for i, row in enumerate(expected):
        kept = row[-max_len:] if max_len else row
        assert padded[i][mask[i]].tolist() == [int(t) for t in kept]
        assert lengths[i] == len(row)  # counted before truncation


def test_integer_ids_above_2_to_the_24_stay_exact():
    big = [2**24 + 1, 2**40 + 3, -5]
    cols = table_to_columns(pa.table({"i": pa.array(big, pa.int64())}), [InputField(input_name="i", input_type="INT64")])
    assert cols["i"].dtype == torch.int64 and cols["i"].tolist() == big


def test_mlp_shapes_and_eval_determinism():
    mlp = MLP(10, [8, 4], dropout_ratio=[0.5, 0.0]).eval()
    x = torch.randn(5, 10)
    assert mlp(x).shape == (5, 4)
    torch.testing.assert_close(mlp(x), mlp(x))


def test_din_attention_ignores_padded_positions_and_zeroes_empty_rows():
    torch.manual_seed(0)
    attention = DINAttention(6, [8])
    query, keys = torch.randn(3, 6), torch.randn(3, 4, 6)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True], [False] * 4])
    out = attention(query, keys, mask)
    assert out.shape == (3, 6)
    changed = keys.clone()
    changed[0, 2:] = 100.0  # padded positions of row 0
    torch.testing.assert_close(attention(query, changed, mask)[0], out[0])
    assert torch.all(out[2] == 0)


@pytest.mark.parametrize("use_bn, hidden, score_activation", [(False, [8, 4], False), (True, [8], False), (False, [], False),
                                                                (True, [8, 4], True), (True, [], True), (False, [8], True)])
def test_din_attention_equals_the_papers_formula(use_bn, hidden, score_activation):
    """The factored first layer, the packed valid positions and the padding-weighted batch
    statistics compute DIN's attention as EasyRec does: the MLP over [q, k, q - k, q * k] at
    every position, padded history embeddings zero, batch norm over all of them (train mode);
    softmax over the valid positions; weights times keys. Values, gradients and running
    statistics all match."""
    import copy

    torch.manual_seed(1)
    attention = DINAttention(5, hidden, "tf.nn.sigmoid", use_bn=use_bn, score_activation=score_activation).train()
    with torch.no_grad():  # batch norm's scale and shift away from 1 and 0, so that both enter every formula
        for bn in (m for m in attention.modules() if isinstance(m, torch.nn.BatchNorm1d)):
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
    reference = copy.deepcopy(attention)
    query, keys = torch.randn(4, 6, 5)[:, 0].clone().requires_grad_(), torch.randn(4, 6, 5)
    mask = torch.rand(4, 6) < 0.6
    mask[3] = False
    zeroed = keys * mask.unsqueeze(2)
    ref_query = query.detach().clone().requires_grad_()
    q = ref_query.unsqueeze(1).expand(-1, 6, -1)
    naive_input = torch.cat([q, zeroed, q - zeroed, q * zeroed], dim=-1).reshape(-1, 20)
    scores = reference.score_post(reference.score(reference.mlp(naive_input))).view(4, 6).masked_fill(~mask, -1e9)
    expected = torch.bmm((torch.softmax(scores, dim=1) * mask).unsqueeze(1), keys).squeeze(1)
    out = attention(query, keys, mask)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    (out * torch.arange(5.0)).sum().backward()
    (expected * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(query.grad, ref_query.grad, rtol=1e-4, atol=1e-6)
    for (name, p), p_ref in zip(attention.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-6, msg=name)
    for (name, b), b_ref in zip(attention.named_buffers(), reference.buffers()):
        torch.testing.assert_close(b.float(), b_ref.float(), rtol=1e-5, atol=1e-6, msg=name)
    attention.eval()
    reference.eval()  # eval mode scores the valid positions only, with the running statistics
    with torch.no_grad():
        scores = reference.score_post(reference.score(reference.mlp(naive_input))).view(4, 6).masked_fill(~mask, -1e9)
        torch.testing.assert_close(attention(query, keys, mask),
                                   torch.bmm((torch.softmax(scores, dim=1) * mask).unsqueeze(1), keys).squeeze(1))  # fmt: skip


def test_autoint_interacting_layer_is_the_papers_equations_at_easyrecs_scale():
    """Song et al. 2019, eqs. 5-8, head by head: softmax over fields of <W_Q e_m, W_K e_k>
    (multiplied by sqrt(head_size), as EasyRec's MultiHeadAttention scales them), sum of W_V e_k, heads concatenated, plus W_Res e_m, ReLU."""
    torch.manual_seed(0)
    layer = InteractingLayer(4, head_num=2, head_size=3)
    e = torch.randn(2, 5, 4)
    expected = torch.empty(2, 5, 6)
    for b in range(2):
        for m in range(5):
            heads = []
            for h in range(2):
                cols = slice(3 * h, 3 * h + 3)
                q = e[b, m] @ layer.query.weight[cols].T
                keys = e[b] @ layer.key.weight[cols].T
                values = e[b] @ layer.value.weight[cols].T
                alpha = torch.softmax(keys @ q * 3**0.5, dim=0)  # EasyRec's q k^T / head_size**-0.5
                heads.append(alpha @ values)
            expected[b, m] = torch.relu(torch.cat(heads) + e[b, m] @ layer.residual.weight.T)
    torch.testing.assert_close(layer(e), expected)


def test_cross_net_formula_of_dcn():
    """Wang et al. 2017, eq. 3: x_{l+1} = x_0 x_l^T w_l + b_l + x_l."""
    torch.manual_seed(0)
    net = CrossNet(4, 3)
    x0 = torch.randn(5, 4)
    x = x0
    for w, b in zip(net.weights, net.biases):
        x = torch.stack([x0[i] * torch.dot(x[i], w) + b + x[i] for i in range(5)])
    torch.testing.assert_close(net(x0), x)


def test_cross_net_v2_formula():
    torch.manual_seed(0)
    net = CrossNetV2(4, 2)
    x0 = torch.randn(3, 4)
    x = x0
    for layer in net.layers:
        x = x0 * (x @ layer.weight.T + layer.bias) + x
    torch.testing.assert_close(net(x0), x)


def test_fm_matches_pairwise_sum():
    e = torch.randn(2, 5, 3)
    brute = sum((e[:, i] * e[:, j]).sum(dim=1) for i in range(5) for j in range(i + 1, 5))
    torch.testing.assert_close(FactorizationMachine()(e).squeeze(1), brute)


def test_din_attention_takes_the_configured_seq_dnn():
    attention = DINAttention(4, [8, 2], "tf.nn.relu", use_bn=True, dropout_ratio=[0.0, 0.5])
    kinds = [type(m).__name__ for m in attention.mlp.net]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Dropout"]


@pytest.mark.parametrize("join_sep", ["", "X", "::"])
def test_combo_feature_crosses_strings_and_integers_with_fnv1a(join_sep):
    """A STRING x INT64 cross: FNV-1a over the string's bytes, '_' (or combo_join_sep), then
    the integer's 8 little-endian bytes; equal pairs share an id, and the order of the inputs matters."""
    from fusionrec.ctr.config import config_from_dict
    from fusionrec.ctr.features import FeatureTransform

    config = config_from_dict({
        "data_config": {"input_fields": [{"input_name": "y", "input_type": "INT32"}, {"input_name": "site"},
                                         {"input_name": "hour", "input_type": "INT64"}], "label_fields": ["y"]},
        "feature_configs": [{"feature_name": "site_x_hour", "input_names": ["site", "hour"], "feature_type": "ComboFeature",
                             "hash_bucket_size": 1000, "embedding_dim": 4, "combo_join_sep": join_sep}],
        "model_config": {"model_class": "DeepFM", "feature_groups": [{"group_name": "deep", "feature_names": ["site_x_hour"]}],
                         "deepfm": {"dnn": {"hidden_units": [4]}}},
    })  # fmt: skip
    fields = [InputField(input_name="site"), InputField(input_name="hour", input_type="INT64")]
    table = pa.table({"site": ["a", "b", "a", "a"], "hour": pa.array([7, 7, 7, -3], pa.int64())})
    ids = FeatureTransform(config)(table_to_columns(table, fields))["site_x_hour"].tolist()
    expected = []
    for site, hour in [("a", 7), ("b", 7), ("a", 7), ("a", -3)]:
        payload = site.encode() + (join_sep or "_").encode() + (hour & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
        expected.append(fnv1a_reference(payload) % 1000)
    assert ids == expected and ids[0] == ids[2] and len(set(ids)) == 3


@pytest.mark.parametrize("embedding_wise", [False, True])
def test_variational_dropout_keeps_each_feature_with_its_learned_rate(embedding_wise):
    """EasyRec's variational_dropout (Chang et al. 2017): eval scales by 1 - p; training's
    concrete keep mask has mean close to 1 - p and, feature-wise, one value per feature."""
    torch.manual_seed(0)
    dims = [2, 3, 1]
    layer = VariationalDropout(dims, regularization_lambda=0.05, embedding_wise=embedding_wise)
    with torch.no_grad():
        layer.logit_p.copy_(torch.linspace(-2.0, 1.5, layer.logit_p.numel()))
    p = torch.sigmoid(layer.logit_p)
    per_dim = p if embedding_wise else torch.repeat_interleave(p, torch.tensor(dims))
    x = torch.randn(4, 6)
    layer.eval()
    torch.testing.assert_close(layer(x), x * (1 - per_dim))
    layer.train()
    keep = layer(torch.ones(40000, 6))
    torch.testing.assert_close(keep.mean(dim=0), 1 - per_dim, atol=0.02, rtol=0)
    if not embedding_wise:  # the dimensions of one feature share its mask
        assert torch.equal(keep[:, 0], keep[:, 1]) and torch.equal(keep[:, 2], keep[:, 4])
        assert not torch.equal(keep[:, 0], keep[:, 2])
    assert float(layer.penalty(32)) == pytest.approx(0.05 / 32 * float((1 - p).sum()))


def _sequence(ids, lengths, dim=4):
    table = torch.nn.Embedding(10, dim)
    ids = torch.tensor(ids)
    mask = torch.arange(ids.shape[1]).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return table, {"s": ids, "s.mask": mask}


def test_attention_sequence_combiner_is_a_softmax_over_valid_positions():
    from fusionrec.ctr.embedding import AttentionPoolSlot

    table, features = _sequence([[1, 2, 3], [4, 0, 0], [0, 0, 0]], [3, 1, 0])
    slot = AttentionPoolSlot("s", table)
    got = slot(features)
    for row, length in enumerate([3, 1, 0]):
        e = table.weight[features["s"][row, :length]]
        expected = (torch.softmax(slot.score(e).squeeze(1), 0).unsqueeze(1) * e).sum(0) if length else torch.zeros(4)
        torch.testing.assert_close(got[row], expected)


def test_text_cnn_sequence_combiner_is_max_over_time_of_each_convolution():
    from fusionrec.ctr.embedding import TextCNNSlot

    table, features = _sequence([[1, 2, 3, 4], [5, 6, 0, 0]], [4, 2])
    slot = TextCNNSlot("s", table, [2, 3], [5, 2], 0, "relu")
    got = slot(features)
    assert got.shape == (2, 7)
    for row, length in enumerate([4, 2]):
        e = torch.zeros(4, 4)
        e[:length] = table.weight[features["s"][row, :length]]
        expected = []
        for conv, k in zip(slot.cnn.convs, [2, 3]):
            windows = [torch.relu(conv.bias + (conv.weight * e[t : t + k].T).sum(dim=(1, 2))) for t in range(4 - k + 1)]
            expected.append(torch.stack(windows).max(dim=0).values)
        torch.testing.assert_close(got[row], torch.cat(expected))


def test_combo_input_seps_cross_every_value_of_a_row():
    """EasyRec's combo_input_seps: each split input contributes each of its values, and every
    combination of a row's values is one crossed id (a multi-value feature, pooled)."""
    from fusionrec.ctr.config import config_from_dict
    from fusionrec.ctr.features import FeatureTransform

    config = config_from_dict({
        "data_config": {"input_fields": [{"input_name": "y", "input_type": "INT32"}, {"input_name": "tags"},
                                         {"input_name": "site"}, {"input_name": "hour", "input_type": "INT64"}],
                        "label_fields": ["y"]},
        "feature_configs": [{"feature_name": "cross", "input_names": ["tags", "site", "hour"], "feature_type": "ComboFeature",
                             "hash_bucket_size": 1000, "embedding_dim": 4, "combo_join_sep": "X",
                             "combo_input_seps": [",", "", ""]}],
        "model_config": {"model_class": "DeepFM", "feature_groups": [{"group_name": "deep", "feature_names": ["cross"]}],
                         "deepfm": {"dnn": {"hidden_units": [4]}}},
    })  # fmt: skip
    fields = [InputField(input_name="tags"), InputField(input_name="site"), InputField(input_name="hour", input_type="INT64")]
    rows = [("a,b", "s1", 7), ("", "s2", 1), ("c", "s3", 2), ("a,,b,c", "s1", 7)]
    table = pa.table({"tags": [r[0] for r in rows], "site": [r[1] for r in rows], "hour": pa.array([r[2] for r in rows], pa.int64())})
    out = torch.jit.script(FeatureTransform(config))(table_to_columns(table, fields))
    for i, (tags, site, hour) in enumerate(rows):
        expected = [fnv1a_reference(t.encode() + b"X" + site.encode() + b"X" + hour.to_bytes(8, "little")) % 1000
                    for t in tags.split(",") if t]  # fmt: skip
        assert out["cross"][i][out["cross.mask"][i]].tolist() == expected


def test_behavior_sequence_transformer_ignores_padding_and_matches_its_heads():
    """EasyRec's BST: history cut or padded to seq_size - 1 (padded embeddings zero), candidate appended; per head slice,
    softmax(q k^T) over unpadded keys (unscaled) times v; projection, add & norm, feed-forward, add & norm."""
    from fusionrec.ctr.modules.sequence import BehaviorSequenceTransformer

    torch.manual_seed(0)
    bst = BehaviorSequenceTransformer(dim=6, seq_size=5, head_count=4).eval()  # slices of 2: [0,2) [2,4) [4,6)
    assert bst.slices == [(0, 2), (2, 4), (4, 6)] and bst.out_dim == 30
    candidate, history = torch.randn(2, 6), torch.randn(2, 7, 6)
    mask = torch.tensor([[True] * 3 + [False] * 4, [True] * 7])
    out = bst(candidate, history, mask)
    changed = history.clone()
    changed[0, 3:] = 50.0  # padded positions of row 0
    torch.testing.assert_close(bst(candidate, changed, mask)[0], out[0])
    tokens = torch.cat([history[:, :4] * mask[:, :4].unsqueeze(2), candidate.unsqueeze(1)], dim=1)
    key_mask = torch.cat([mask[:, :4], torch.ones(2, 1, dtype=torch.bool)], dim=1)
    heads = []
    for (a, b), q, k, v in zip(bst.slices, bst.queries, bst.keys, bst.values):
        part = tokens[:, :, a:b]
        scores = (q(part) @ k(part).transpose(1, 2)).masked_fill(~key_mask[:, None, :], -(2.0**32) + 1)
        heads.append(torch.softmax(scores, dim=-1) @ v(part))
    x = bst.norm1(tokens + bst.merge(torch.cat(heads, dim=2)))
    torch.testing.assert_close(out, bst.norm2(x + bst.feed_forward(x)).flatten(1))


def test_din_attends_aux_sequences_with_the_history_weights():
    """EasyRec's aux_hist_seq: attended with the weights hist_seq's attention gives."""
    from fusionrec.ctr.modules.din import DINAttention

    torch.manual_seed(0)
    attention = DINAttention(4, [8], use_bn=False).eval()
    query, keys, aux = torch.randn(3, 4), torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [True] * 3 + [False] * 2])
    both = attention(query, keys, mask, torch.cat([keys, aux], dim=2))
    torch.testing.assert_close(both, torch.cat([attention(query, keys, mask), attention(query, keys, mask, aux)], dim=1))


def test_every_feature_type_has_its_module_and_only_those():
    # one registry line per EasyRec feature type (fusionrec.ctr.features.FEATURE_MODULES)
    from fusionrec.ctr.config import FEATURE_TYPES
    from fusionrec.ctr.features import FEATURE_MODULES, FeatureModule

    assert set(FEATURE_MODULES) == set(FEATURE_TYPES)
    assert all(issubclass(module, FeatureModule) for module in FEATURE_MODULES.values())


def test_every_feature_type_has_its_config_rules_and_only_those():
    # the config side of a feature type: its rules and reader options (torch-free)
    from fusionrec.ctr.config import FEATURE_TYPES
    from fusionrec.ctr.config.feature_types import FEATURE_TYPE_RULES

    assert set(FEATURE_TYPE_RULES) == set(FEATURE_TYPES)
