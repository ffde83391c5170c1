"""EasyRec's backbone: the block graph checked when the config loads and when the model is
built (errors name the block), lambdas parsed never evaluated, each component against a
plain reference, and backbone models that train, export and predict."""

import copy
import itertools

import numpy as np
import pytest
import torch
import yaml

from fusionrec.ctr.backbone_ops import Value, compile_lambda
from fusionrec.ctr.components import COMPONENTS, build_component
from fusionrec.ctr.config import BACKBONE_LAYERS, KerasLayerConfig, config_from_dict
from fusionrec.ctr.export import export, predict
from fusionrec.ctr.trainer import Trainer
from fusionrec.errors import FusionrecError
from tests.ctr.test_multitask import small
from tests.ctr.test_pipeline import EXAMPLES, taobao  # noqa: F401  (fixture)

DEEPFM = next(p for p in EXAMPLES if p.name == "taobao_backbone_deepfm.yaml")


def deepfm() -> dict:
    return yaml.safe_load(DEEPFM.read_text())


def with_blocks(blocks: list[dict], **backbone) -> dict:
    data = deepfm()
    data["model_config"]["backbone"] = {"blocks": blocks, **backbone}
    return data


def tensors(rng, *shapes) -> list[torch.Tensor]:
    return [torch.tensor(rng.normal(size=(4, *shape)), dtype=torch.float32) for shape in shapes]


def test_components_and_their_config_names_agree():
    assert set(COMPONENTS) == set(BACKBONE_LAYERS)


# ------------------------------------------------------------------ lambdas
@pytest.mark.parametrize("text, value, expected", [
    ("lambda x: [x, x]", Value.tensor(3), lambda x: [x[0], x[0]]),
    ("lambda x: x[1]", Value.of_list([(3,), (5,)]), lambda x: [x[1]]),
    ("lambda x: x[-2:]", Value.of_list([(3,), (3,), (3,)]), lambda x: x[1:]),
    ("lambda x: tf.add_n(x)", Value.of_list([(3,), (3,)]), lambda x: [x[0] + x[1]]),
    ("lambda x: tf.concat(x, axis=1)", Value.of_list([(3,), (5,)]), lambda x: [torch.cat(x, 1)]),
    ("lambda x: tf.concat(x, -1)", Value.of_list([(3,), (5,)]), lambda x: [torch.cat(x, 1)]),
    ("lambda x: tf.stack(x, axis=1)", Value.of_list([(3,), (3,)]), lambda x: [torch.stack(x, 1)]),
    ("lambda x: tf.reduce_sum(x, axis=1, keepdims=True)", Value.tensor(6), lambda x: [x[0].sum(1, keepdim=True)]),
    ("lambda x: tf.add_n([x[0], x[1]])", Value.of_list([(2,), (2,)]), lambda x: [x[0] + x[1]]),
])  # fmt: skip
def test_lambdas_compute_what_tensorflow_would(text, value, expected, rng):
    op, out = compile_lambda(text, value, "block 'b'")
    inputs = tensors(rng, *value.shapes)
    got = op(inputs)
    want = expected(inputs)
    assert len(got) == len(want) == len(out.shapes)
    for g, w, shape in zip(got, want, out.shapes):
        torch.testing.assert_close(g, w)
        assert tuple(g.shape[1:]) == shape


@pytest.mark.parametrize("text, message", [
    ("lambda x: __import__('os').system('true')", "which fusionrec does not read"),
    ("lambda x: tf.nn.relu(x)", "which fusionrec does not read"),
    ("lambda x, y: x", "not a lambda of one argument"),
    ("x + 1", "not a lambda"),
    ("lambda x: x[", "not a Python lambda"),
    ("lambda x: tf.add_n(x)", "needs tensors of one shape"),
])  # fmt: skip
def test_other_lambdas_are_refused_by_name(text, message):
    with pytest.raises(FusionrecError, match=message) as error:
        compile_lambda(text, Value.of_list([(3,), (4,)]), "backbone block 'b'")
    assert "backbone block 'b'" in str(error.value)


# ------------------------------------------------------------------ the graph
@pytest.mark.parametrize("blocks, extra, message", [
    ([{"name": "a", "inputs": [{"block_name": "b"}], "keras_layer": {"class_name": "Add"}},
      {"name": "b", "inputs": [{"block_name": "a"}], "keras_layer": {"class_name": "Add"}}], {}, r"cycle: a -> b -> a"),
    ([{"name": "a", "inputs": [{"block_name": "nowhere"}]}], {}, r"block 'a': input block_name 'nowhere' is not a block"),
    ([{"name": "a", "inputs": [{"feature_group_name": "wide"}]}, {"name": "a", "inputs": [{"feature_group_name": "wide"}]}],
     {}, "block names must be unique"),
    ([{"name": "a", "inputs": [{"feature_group_name": "features"}], "keras_layer": {"class_name": "NaryDisEmbedding"}}], {},
     r"class_name 'NaryDisEmbedding' is not implemented yet by fusionrec; it has \["),
    ([{"name": "a", "inputs": [{"feature_group_name": "features"}]}], {"concat_blocks": ["b"]}, r"name 'b', which is not a block"),
])  # fmt: skip
def test_graph_errors_are_found_when_the_config_loads(blocks, extra, message):
    with pytest.raises(FusionrecError, match=message):
        config_from_dict(with_blocks(blocks, **extra))


@pytest.mark.parametrize("blocks, message", [
    ([{"name": "m", "inputs": [{"feature_group_name": "features"}], "keras_layer": {"class_name": "MLP", "mlp": {"hidden_units": [4]}}},
      {"name": "add", "inputs": [{"feature_group_name": "features"}, {"block_name": "m"}],
       "merge_inputs_into_list": True, "keras_layer": {"class_name": "Add"}}],
     r"backbone block 'add' \(Add\): Add needs tensors of one shape, got a list of 2 tensors of shapes \[\[272\], \[4\]\]"),
    ([{"name": "f", "inputs": [{"feature_group_name": "features"}], "input_layer": {"only_output_feature_list": True}},
      {"name": "mlp", "inputs": [{"block_name": "f"}], "keras_layer": {"class_name": "MLP", "mlp": {"hidden_units": [4]}}}],
     r"block 'mlp' \(MLP\): MLP needs one \(batch, D\) tensor, got a list of 17 tensors"),
    ([{"name": "x", "inputs": [{"feature_group_name": "features", "input_fn": "lambda x: x[0]"}]}],
     r"block 'x' input_fn: 'lambda x: x\[0\]' indexes a tensor"),
    ([{"name": "w", "inputs": [{"feature_group_name": "wide"}]}], r"group 'wide' is WIDE; its input_layer needs wide_output_dim"),
])  # fmt: skip
def test_shape_errors_are_found_when_the_model_is_built_and_name_the_block(blocks, message, taobao, tmp_path):
    config = config_from_dict(small(with_blocks(blocks), taobao, tmp_path / "m"))
    with pytest.raises(FusionrecError, match=message):
        Trainer(config)


# ------------------------------------------------------------------ components against references
def component(class_name: str, value: Value, **params):
    layer = KerasLayerConfig(class_name=class_name, **params)
    return build_component(layer, value, "block 'b'")


def test_fm_is_the_sum_of_pairwise_inner_products(rng):
    fields = tensors(rng, (5,), (5,), (5,))
    op, out = component("FM", Value.of_list([(5,)] * 3))
    expected = sum((fields[i] * fields[j]).sum(1, keepdim=True) for i, j in itertools.combinations(range(3), 2))
    torch.testing.assert_close(op(fields)[0], expected, rtol=1e-5, atol=1e-5)
    assert out == Value.tensor(1)


def test_dot_interaction_is_every_pair_below_the_diagonal(rng):
    fields = tensors(rng, (4,), (4,), (4,), (4,))
    op, out = component("DotInteraction", Value.of_list([(4,)] * 4))
    got = op(fields)[0]
    expected = torch.stack([(fields[i] * fields[j]).sum(1) for i in range(4) for j in range(i)], dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert out == Value.tensor(6)


def test_cross_is_x0_times_a_linear_map_of_x_plus_x(rng):
    x0, x = tensors(rng, (6,), (6,))
    op, _ = component("Cross", Value.of_list([(6,), (6,)]))
    dense = op.dense
    torch.testing.assert_close(op([x0, x])[0], x0 * (x @ dense.weight.T + dense.bias) + x)


def test_cin_against_explicit_loops(rng):
    fields = tensors(rng, (3,), (3,))
    op, out = component("CIN", Value.of_list([(3,), (3,)]), cin={"hidden_feature_sizes": [2, 3]})
    x0 = torch.stack(fields, 1)
    hidden, pooled = x0, []
    for conv in op.convs:
        weight, bias = conv.weight[:, :, 0], conv.bias  # (H_k, H_{k-1} * m)
        maps = []
        for h in range(weight.shape[0]):
            total = torch.zeros(4, 3) + bias[h]
            for i in range(hidden.shape[1]):
                for j in range(x0.shape[1]):
                    total = total + weight[h, i * x0.shape[1] + j] * hidden[:, i] * x0[:, j]
            maps.append(torch.relu(total))
        hidden = torch.stack(maps, 1)
        pooled.append(hidden.sum(2))
    torch.testing.assert_close(op(fields)[0], torch.cat(pooled, 1), rtol=1e-5, atol=1e-5)
    assert out == Value.tensor(5)


def test_senet_reweights_the_fields_by_their_squeezed_statistics(rng):
    fields = tensors(rng, (4,), (6,))
    op, out = component("SENet", Value.of_list([(4,), (6,)]), senet={"reduction_ratio": 2, "num_squeeze_group": 2,
                                                                     "use_output_layer_norm": False})  # fmt: skip
    z = torch.cat([s for f in fields for s in (f.reshape(4, 2, -1).max(2).values, f.reshape(4, 2, -1).mean(2))], 1)
    weights = op.excite(torch.relu(op.reduce(z)))
    inputs = torch.cat(fields, 1)
    torch.testing.assert_close(op(fields)[0], inputs * weights + inputs)
    assert out == Value.tensor(10)


def test_gate_is_the_weighted_sum_of_the_other_inputs(rng):
    weights, a, b = tensors(rng, (2,), (3,), (3,))
    op, out = component("Gate", Value.of_list([(2,), (3,), (3,)]))
    torch.testing.assert_close(op([weights, a, b])[0], weights[:, :1] * a + weights[:, 1:] * b)
    assert out == Value.tensor(3)


def test_mask_block_masks_the_input_by_the_instance(rng):
    net, mask_input = tensors(rng, (4,), (6,))
    op, out = component("MaskBlock", Value.of_list([(4,), (6,)]), mask_block={"aggregation_size": 8})
    block = op.block
    mask = block.weights(torch.relu(block.aggregate(mask_input)))
    torch.testing.assert_close(op([net, mask_input])[0], net * mask)
    assert out == Value.tensor(4)


# ------------------------------------------------------------------ models
def test_recurrent_cross_equals_the_layers_applied_by_hand(taobao, tmp_path):
    blocks = [{"name": "cross", "inputs": [{"feature_group_name": "features", "input_fn": "lambda x: [x, x]"}],
               "recurrent": {"num_steps": 3, "fixed_input_index": 0, "keras_layer": {"class_name": "Cross"}}}]  # fmt: skip
    trainer = Trainer(config_from_dict(small(with_blocks(blocks), taobao, tmp_path / "m")))
    backbone = trainer.model.backbone
    from fusionrec.ctr.data import iter_batches

    batch = next(iter_batches(trainer._reader(), [str(taobao / "test.csv")], 8, shuffle=False, shuffle_rows=0, seed=0))
    features = trainer.transform(batch.columns)
    x0 = backbone.blocks[0](features, [])[0]
    x = x0
    for step in backbone.blocks[1].layers[0].steps:
        x = x0 * step.dense(x) + x
    torch.testing.assert_close(backbone(features)[0], x)


def test_multi_task_backbone_gives_each_tower_its_mmoe_output(taobao, tmp_path):
    data = deepfm()
    data["data_config"]["label_fields"] = ["clk", "buy"]
    model = data["model_config"]
    model["model_class"] = "MultiTaskModel"
    model["backbone"] = {"blocks": [{"name": "mmoe", "inputs": [{"feature_group_name": "features"}], "keras_layer": {
        "class_name": "MMoE", "mmoe": {"num_task": 2, "num_expert": 3, "expert_mlp": {"hidden_units": [8]}}}}]}
    model["model_params"] = {"task_towers": [
        {"tower_name": "ctr", "label_name": "clk", "dnn": {"hidden_units": [4]}, "metrics_set": [{"auc": {}}]},
        {"tower_name": "cvr", "label_name": "buy", "dnn": {"hidden_units": [4]}, "metrics_set": [{"auc": {}}],
         "relation_tower_names": ["ctr"]}]}  # fmt: skip
    config = config_from_dict(small(data, taobao, tmp_path / "m"))
    trainer = Trainer(config)
    assert trainer.model.per_tower
    report = trainer.train(progress=False)
    assert {"auc_ctr", "auc_cvr"} <= set(report["eval"])
    export(trainer, tmp_path / "export")
    result = predict(str(taobao / "test.csv"), str(tmp_path / "p.csv"), str(tmp_path / "export"),
                     output_cols="probs_ctr double,probs_cvr double")  # fmt: skip
    assert result["rows_written"] == 300
    three = copy.deepcopy(data)
    three["model_config"]["backbone"]["blocks"][0]["keras_layer"]["mmoe"]["num_task"] = 3
    with pytest.raises(FusionrecError, match="a list of 3 tensors.*for 2 task towers"):
        Trainer(config_from_dict(small(three, taobao, tmp_path / "m3")))


def test_backbone_deepfm_is_deepfm_wide_plus_fm_plus_deep(taobao, tmp_path):
    trainer = Trainer(config_from_dict(small(deepfm(), taobao, tmp_path / "m")))
    model = trainer.model.eval()
    assert not model.has_head  # the Add block already gives one logit
    from fusionrec.ctr.data import iter_batches

    batch = next(iter_batches(trainer._reader(), [str(taobao / "test.csv")], 16, shuffle=False, shuffle_rows=0, seed=0))
    features = trainer.transform(batch.columns)
    blocks = {name: i for i, name in enumerate(["wide", "wide_logit", "features", "fm", "deep", "final_logit"])}
    values: list = []
    for block in model.backbone.blocks:
        values.append(block(features, values))
    fields = values[blocks["features"]][1:]
    wide = values[blocks["wide"]][0].sum(1)
    fm = sum((fields[i] * fields[j]).sum(1) for i, j in itertools.combinations(range(len(fields)), 2))
    deep = values[blocks["deep"]][0].squeeze(1)
    with torch.no_grad():
        torch.testing.assert_close(model(features), wide + fm + deep, rtol=1e-4, atol=1e-4)
    assert np.isfinite(trainer.train(progress=False)["eval"]["auc"])


def test_din_layer_attends_over_the_valid_positions_with_the_padded_target(rng):
    history, target = tensors(rng, (5, 6), (4,))
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [False] * 5, [True] * 3 + [False] * 2])
    value = Value((( -1, 6), (-1,), (4,)), True, (Value.tensor(-1, 6), Value.tensor(-1), Value.tensor(4)))
    op, out = component("DIN", value, din={"attention_dnn": {"hidden_units": [8, 1], "use_bn": False}})
    op.eval()
    query = torch.nn.functional.pad(target, [0, 2])
    expected = []
    for b in range(4):
        rows = []
        for position in range(5):
            q, k = query[b], history[b, position]
            rows.append(op.mlp(torch.cat([q, k, q - k, q * k]).unsqueeze(0))[0, 0])
        scores = torch.stack(rows).masked_fill(~mask[b], -(2.0**32) + 1)
        weights = torch.softmax(scores, dim=0)
        expected.append(torch.cat([(weights.unsqueeze(1) * history[b, :, :4]).sum(0), query[b]]))
    torch.testing.assert_close(op([history, mask, target])[0], torch.stack(expected), rtol=1e-5, atol=1e-5)
    assert out == Value.tensor(4 + 6)


def test_text_cnn_layer_ignores_padded_positions(rng):
    (history,) = tensors(rng, (3, 4))
    mask = torch.tensor([[True, True, False]] * 4)
    value = Value(((-1, 4), (-1,)), True, (Value.tensor(-1, 4), Value.tensor(-1)))
    op, out = component("TextCNN", value, text_cnn={"filter_sizes": [2], "num_filters": [5], "pad_sequence_length": 4})
    changed = history.clone()
    changed[:, 2] = 100.0  # a padded position's values do not matter
    torch.testing.assert_close(op([history, mask])[0], op([changed, mask])[0])
    assert out == Value.tensor(5)


def test_sequence_input_block_gives_history_mask_and_target(taobao, tmp_path):
    blocks = [{"name": "seq", "inputs": [{"feature_group_name": "sequence"}], "input_layer": {"output_seq_and_normal_feature": True}},
              {"name": "din", "inputs": [{"block_name": "seq"}], "keras_layer": {"class_name": "DIN", "din": {
                  "attention_dnn": {"hidden_units": [4, 1]}}}}]  # fmt: skip
    data = with_blocks(blocks)
    data["model_config"]["feature_groups"].append(
        {"group_name": "sequence", "feature_names": ["cate_id", "brand", "tag_category_list", "tag_brand_list"]})
    trainer = Trainer(config_from_dict(small(data, taobao, tmp_path / "m")))
    from fusionrec.ctr.data import iter_batches

    batch = next(iter_batches(trainer._reader(), [str(taobao / "test.csv")], 8, shuffle=False, shuffle_rows=0, seed=0))
    features = trainer.transform(batch.columns)
    history, mask, target = trainer.model.backbone.blocks[0](features, [])
    slot = trainer.model.backbone.blocks[0].slot
    tables = {name: table for name, table in zip(slot.hists, slot.hist_tables)}
    expected = torch.cat([tables[n].weight[features[n]] for n in ("tag_category_list", "tag_brand_list")], dim=2)
    torch.testing.assert_close(history, expected)
    assert torch.equal(mask, features["tag_category_list.mask"]) and target.shape == (8, 32)
    assert np.isfinite(trainer.train(progress=False)["eval"]["auc"])


def test_bst_layer_puts_the_target_first_and_attends_to_nonzero_positions(rng):
    history, target = tensors(rng, (3, 4), (4,))
    history[:, 2] = 0.0  # a padded position: all zeros, not attended (EasyRec's mask)
    mask = torch.ones(4, 3, dtype=torch.bool)
    value = Value(((-1, 4), (-1,), (4,)), True, (Value.tensor(-1, 4), Value.tensor(-1), Value.tensor(4)))
    params = {"hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8,
              "max_position_embeddings": 5, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}  # fmt: skip
    op, out = component("BST", value, bst={**params, "output_all_token_embeddings": False})
    op.eval()
    tokens = torch.cat([target.unsqueeze(1), history], dim=1)
    expected = op.encoder(op.postprocess(tokens, None), torch.tensor([[True, True, True, False]] * 4))[:, 0]
    torch.testing.assert_close(op([history, mask, target])[0], expected)
    assert out == Value.tensor(4)
    all_tokens, out_all = component("BST", value, bst=params)
    assert out_all == Value.tensor((5 + 1) * 4) and all_tokens([history, mask, target])[0].shape == (4, 24)
    too_long = tensors(rng, (6, 4))[0]
    with pytest.raises(Exception, match="longer than max_position_embeddings 5"):
        all_tokens([too_long, torch.ones(4, 6, dtype=torch.bool), target])


def test_periodic_embedding_is_sin_and_cos_of_trained_frequencies(rng):
    (numbers,) = tensors(rng, (3,))
    op, out = component("PeriodicEmbedding", Value.tensor(3), periodic_embedding={
        "embedding_dim": 4, "sigma": 0.5, "add_linear_layer": False, "output_tensor_list": True})  # fmt: skip
    got = op([numbers])
    c = op.coefficients.detach()[0]  # (3, 2)
    for i in range(3):
        angles = 2 * np.pi * c[i] * numbers[:, i : i + 1]
        torch.testing.assert_close(got[1 + i], torch.cat([torch.sin(angles), torch.cos(angles)], dim=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[0], torch.cat(got[1:], dim=1))
    assert out.parts == (Value.tensor(12), Value.of_list([(4,)] * 3))
    pick, picked = compile_lambda("lambda x: x[1]", out, "block 'fm'")
    assert picked == Value.of_list([(4,)] * 3) and len(pick(got)) == 3


def test_autodis_embedding_weighs_meta_embeddings_by_a_soft_discretization(rng):
    (numbers,) = tensors(rng, (2,))
    op, out = component("AutoDisEmbedding", Value.tensor(2), auto_dis_embedding={
        "embedding_dim": 3, "num_bins": 4, "temperature": 0.5, "keep_prob": 0.8})  # fmt: skip
    got = op([numbers])[0]
    meta, w, mix = op.meta.detach(), op.projection.detach()[0], op.mixing.detach()
    for b in range(4):
        for n in range(2):
            h = torch.nn.functional.leaky_relu(w[n] * numbers[b, n], 0.2)
            weights = torch.softmax((mix[n] @ h + 0.8 * h) / 0.5, dim=0)
            torch.testing.assert_close(got[b, n * 3 : n * 3 + 3], weights @ meta[n], rtol=1e-5, atol=1e-5)
    assert out == Value.tensor(6)


@pytest.mark.parametrize("kind", ["all", "each", "interaction"])
def test_bilinear_is_a_linear_map_of_pairwise_products(kind, rng):
    fields = tensors(rng, (3,), (3,), (3,))
    op, out = component("Bilinear", Value.of_list([(3,)] * 3), bilinear={"type": kind, "num_output_units": 2})
    products = []
    for k, (i, j) in enumerate(itertools.combinations(range(3), 2)):
        dense = op.dense[0] if kind == "all" else op.dense[i] if kind == "each" else op.dense[k]
        products.append((dense(fields[i]) * fields[j]).sum(1, keepdim=True))
    torch.testing.assert_close(op(fields)[0], op.output(torch.cat(products, 1)))
    assert out == Value.tensor(2)


def test_ppnet_gates_each_layer_by_the_gate_input(rng):
    x, gate_input = tensors(rng, (5,), (3,))
    op, out = component("PPNet", Value.of_list([(5,), (3,)]), ppnet={"mlp": {"hidden_units": [4, 2], "use_bn": False,
                                                                             "use_final_bn": False}})  # fmt: skip
    op.eval()
    g = torch.cat([x, gate_input], dim=1)  # full_gate_input: the input joins the gate input
    hidden = torch.relu(op.layers[0][0](x)) * 2 * torch.sigmoid(op.gates[0].net(g))
    expected = op.layers[1][0](hidden) * 2 * torch.sigmoid(op.gates[1].net(g))  # lazy: the last layer gated too, linear
    torch.testing.assert_close(op([x, gate_input])[0], expected)
    assert op.layers[0][0].bias is None and out == Value.tensor(2)  # PPNet's MLP has no biases unless set


def test_aitm_attends_over_this_tower_and_the_transferred_earlier_one(rng):
    this, earlier = tensors(rng, (4,), (4,))
    op, out = component("AITMTower", Value.of_list([(4,), (4,)]), aitm={"transfer_mlp": {"hidden_units": [4], "use_bn": False}})
    transferred = op.transfer(earlier)
    q = torch.stack([op.queries[0](this), op.queries[1](transferred)], 1)
    k = torch.stack([op.keys[0](this), op.keys[1](transferred)], 1)
    v = torch.stack([op.values[0](this), op.values[1](transferred)], 1)
    weights = torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=2)  # scaled by sqrt(4)
    torch.testing.assert_close(op([this, earlier])[0], (weights @ v)[:, 0])
    assert out == Value.tensor(4)
    earlier.requires_grad_(True)
    op([this, earlier])[0].sum().backward()
    assert earlier.grad is None  # the earlier tower's gradient is stopped (stop_gradient)


# ------------------------------------------------------------------ CL4SRec: packages, SeqAugment, AuxiliaryLoss
def test_seq_augment_crops_masks_or_reorders_each_row_and_only_while_training():
    torch.manual_seed(0)
    batch, length, dim = 64, 10, 3
    lengths = torch.randint(0, length + 1, (batch,))
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    history = (torch.arange(1, length + 1, dtype=torch.float32).view(1, length, 1) * mask.unsqueeze(2)).expand(batch, length, dim)
    layer = component("SeqAugment", Value((( -1, dim), (-1,)), True, (Value.tensor(-1, dim), Value.tensor(-1))),
                      seq_aug={"mask_rate": 0.5, "crop_rate": 0.3, "reorder_rate": 0.5})[0]
    layer.eval()
    assert layer([history, mask])[0] is history
    layer.train()
    seen = set()
    for _ in range(5):
        out, new_mask = (t.detach() for t in layer([history, mask]))
        for row in range(batch):
            n = int(lengths[row])
            values = out[row, :, 0]
            items = [float(v) for v in values[: int(new_mask[row].sum())]]
            masked = torch.isclose(out[row, :n], layer.mask_embedding.detach().expand(n, dim)).all(dim=1)
            if int(new_mask[row].sum()) < n or (n and int(n * 0.3) == 0 and n > 0 and not bool(new_mask[row].any())):
                start = int(items[0]) - 1 if items else 0  # crop: consecutive items from a random start, at the front
                assert items == [float(start + 1 + k) for k in range(int(n * 0.3))]
                assert bool((out[row, len(items):] == 0).all())
                seen.add("crop")
            elif bool(masked.any()):  # mask: floor(n x 0.5) items replaced, the others in place
                assert int(masked.sum()) == int(n * 0.5)
                kept = ~masked
                assert torch.equal(values[:n][kept], torch.arange(1, n + 1, dtype=torch.float32)[kept])
                seen.add("mask")
            else:  # reorder (or nothing to change): a permutation of the items, one contiguous span moved
                assert sorted(items) == [float(k) for k in range(1, n + 1)] and bool(torch.equal(new_mask[row], mask[row]))
                moved = [k for k in range(n) if items[k] != k + 1]
                assert not moved or (moved[-1] - moved[0] + 1 <= int(n * 0.5))
                seen.add("reorder")
    assert seen == {"crop", "mask", "reorder"}


def test_auxiliary_nce_loss_is_cl4srec_nt_xent(rng):
    first, second = tensors(rng, (5,), (5,))
    layer = component("AuxiliaryLoss", Value.of_list([(5,), (5,)]),
                      st_params={"loss_type": "nce_loss", "loss_weight": 0.5, "temperature": 0.2})[0]  # fmt: skip
    z = torch.cat([first, second]).double()
    total = 0.0
    for i in range(8):
        positive = (i + 4) % 8
        scores = [float(z[i] @ z[j]) / 0.2 for j in range(8) if j != i]
        top = max(scores)
        total += -(float(z[i] @ z[positive]) / 0.2 - top - np.log(sum(np.exp(s - top) for s in scores)))
    assert float(layer([first, second])[0]) == pytest.approx(0.5 * total / 8, rel=1e-5)
    info = component("AuxiliaryLoss", Value.of_list([(5,), (5,)]), st_params={"loss_type": "info_nce", "temperature": 0.2})[0]
    logits = (first @ second.t() / 0.2).double()
    expected = float(-(logits.diag() - torch.logsumexp(logits, dim=1)).mean())
    assert float(info([first, second])[0]) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(FusionrecError, match=r"loss_type 'triplet'.*nce_loss"):
        component("AuxiliaryLoss", Value.of_list([(5,), (5,)]), st_params={"loss_type": "triplet"})


def cl4srec_blocks() -> dict:
    blocks = [
        {"name": "seq", "inputs": [{"feature_group_name": "sequence"}], "input_layer": {"output_seq_and_normal_feature": True}},
        {"name": "views", "inputs": [{"package_name": "encoder", "package_input": "augment"},
                                     {"package_name": "encoder", "package_input": "augment"}],
         "merge_inputs_into_list": True,
         "keras_layer": {"class_name": "AuxiliaryLoss", "st_params": {"loss_type": "nce_loss", "loss_weight": 0.1}}},
        {"name": "main", "inputs": [{"package_name": "encoder", "package_input": "seq"}, {"feature_group_name": "features"}]},
    ]
    packages = [
        {"name": "augment", "blocks": [{"name": "aug", "inputs": [{"block_name": "seq"}],
                                        "keras_layer": {"class_name": "SeqAugment", "seq_aug": {}}}]},
        {"name": "encoder", "blocks": [{"name": "bst", "inputs": [{"use_package_input": True}], "keras_layer": {
            "class_name": "BST", "bst": {"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
                                         "intermediate_size": 8, "max_position_embeddings": 50, "output_all_token_embeddings": False}}}]},
    ]  # fmt: skip
    data = with_blocks(blocks, packages=packages, concat_blocks=["main"], top_mlp={"hidden_units": [8]})
    data["model_config"]["feature_groups"].append({"group_name": "sequence", "feature_names": ["tag_category_list", "tag_brand_list"]})
    return data


def test_a_package_called_three_times_shares_its_layers_and_its_auxiliary_loss_trains(taobao, tmp_path):
    config = config_from_dict(small(cl4srec_blocks(), taobao, tmp_path / "m"))
    assert config.model_config_.backbone.block_order() == ["seq", "views", "main"]
    trainer = Trainer(config)
    backbone = trainer.model.backbone
    encoders = [m.layers[0] for m in backbone.blocks if len(getattr(m, "layers", [])) and type(m.layers[0]).__name__ == "BSTLayer"]
    assert len(encoders) == 3 and encoders[0] is encoders[1] is encoders[2]
    assert sum(p.numel() for p in trainer.model.parameters()) == sum(p.numel() for p in set(trainer.model.parameters()))
    from fusionrec.ctr.data import iter_batches

    batch = next(iter_batches(trainer._reader(), [str(taobao / "test.csv")], 32, shuffle=False, shuffle_rows=0, seed=0))
    features = trainer.transform(batch.columns)
    trainer.model.train()
    logits, auxiliary = trainer._training_forward(features, None)
    assert logits.shape == (32,) and auxiliary is not None and float(auxiliary.detach()) > 0
    auxiliary.backward()  # the contrastive loss reaches the shared encoder and the mask embedding
    assert encoders[0].encoder.layers[0].attention.query.weight.grad is not None
    trainer.model.eval()
    values = backbone.block_values(features)
    assert values[backbone.auxiliary_index[0]] == []  # the contrastive branch is not computed when serving
    report = trainer.train(progress=False)
    assert np.isfinite(report["eval"]["auc"])
    export(trainer, tmp_path / "export")
    result = predict(str(taobao / "test.csv"), str(tmp_path / "p.csv"), str(tmp_path / "export"), output_cols="probs double")
    assert result["rows_written"] == 300


@pytest.mark.parametrize("change, message", [
    (lambda b, p: b[1]["inputs"][0].update(package_name="decoder"), r"package_name 'decoder' is not a package"),
    (lambda b, p: b[2]["inputs"].append({"use_package_input": True}), r"use_package_input is for the blocks of a package"),
    (lambda b, p: p[0]["blocks"][0]["inputs"].__setitem__(0, {"package_name": "augment"}), r"packages call each other in a cycle"),
    (lambda b, p: b[1]["inputs"][0].update(block_name="seq"), r"exactly one of feature_group_name, block_name, package_name"),
])  # fmt: skip
def test_package_errors_are_config_errors(change, message):
    data = cl4srec_blocks()
    backbone = data["model_config"]["backbone"]
    change(backbone["blocks"], backbone["packages"])
    with pytest.raises(FusionrecError, match=message):
        config_from_dict(data)


def test_struct_params_in_protobuf_text_are_a_dict():
    from fusionrec.ctr.textformat import parse, shape

    text = 'st_params { fields { key: "loss_type" value { string_value: "nce_loss" } } ' \
           'fields { key: "temperature" value { number_value: 0.15 } } fields { key: "on" value { bool_value: true } } }'
    assert shape(parse(text, "t.config"), KerasLayerConfig, {})["st_params"] == {"loss_type": "nce_loss", "temperature": 0.15, "on": True}
