"""An EasyRec config means EasyRec's model: what TensorFlow's defaults and EasyRec's code say
where the config is silent, one test per default (fusionrec.ctr.modules.tf_defaults,
fusionrec.ctr.optimizers, fusionrec.ctr.regularization)."""

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fusionrec.ctr.config import load_config
from fusionrec.ctr.embedding import BagSlot
from fusionrec.ctr.modules.mlp import mlp_layers
from fusionrec.ctr.modules.tf_defaults import INITIALIZERS, initialize_as_tensorflow_
from fusionrec.ctr.optimizers import tf_adam_epsilon
from fusionrec.ctr.trainer import Trainer
from fusionrec.errors import FusionrecError
from tests.ctr.test_pipeline import WIDE_AND_DEEP, edits, taobao  # noqa: F401  (fixture)

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "easyrec" / "configs"


def _trainer(taobao, tmp_path, config=WIDE_AND_DEEP, **extra):  # noqa: F811
    return Trainer(load_config(config, edits(taobao, tmp_path / "m", **extra)))


def _batch_norms(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]


@pytest.mark.parametrize("sample", ["dcn_on_taobao", "din_on_taobao", "multi_tower_on_taobao", "dbmtl_on_taobao",
                                    "dcn_backbone_on_taobao"])  # fmt: skip
def test_batch_norm_uses_tensorflows_momentum_and_epsilon(taobao, tmp_path, sample):  # noqa: F811
    """tf.layers.batch_normalization / keras BatchNormalization: momentum 0.99 (the moving
    average keeps 0.99 of itself: torch's momentum 0.01) and epsilon 1e-3."""
    path = SAMPLES / f"{sample}.config"
    if not path.exists():
        pytest.skip(f"{path} is not here")
    trainer = Trainer(load_config(path, edits(taobao, tmp_path / "m")))
    norms = _batch_norms(trainer.model)
    assert norms, "the sample's model has batch norms"
    assert {(m.momentum, m.eps) for m in norms} == {(0.01, 1e-3)}


def test_the_batch_norm_momentum_option_changes_only_the_momentum(taobao, tmp_path):  # noqa: F811
    config = load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m"))  # its DNNs use batch norm (EasyRec's default)
    trainer = Trainer(config, batch_norm_momentum=0.1)
    assert {(m.momentum, m.eps) for m in _batch_norms(trainer.model)} == {(0.1, 1e-3)}
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(FusionrecError, match=r"batch_norm_momentum .*must be in \(0, 1\]"):
            Trainer(config, batch_norm_momentum=bad)


def test_a_moving_average_steps_as_tensorflows():
    """moving = 0.99 * moving + 0.01 * batch_mean, after one training batch."""
    norm = initialize_as_tensorflow_(nn.Sequential(nn.BatchNorm1d(3)))[0]
    x = torch.randn(64, 3) + 5.0
    norm.train()(x)
    assert torch.allclose(norm.running_mean, 0.01 * x.mean(0), atol=1e-6)


def _limit_and_std(weight):
    return float(weight.abs().max()), float(weight.std())


def test_dense_kernels_start_glorot_uniform_with_zero_biases(taobao, tmp_path):  # noqa: F811
    """tf.layers.dense's kernel_initializer None is glorot_uniform: U(+-sqrt(6 / (fan_in + fan_out))), bias 0."""
    torch.manual_seed(0)
    layer = initialize_as_tensorflow_(nn.Sequential(nn.Linear(300, 200)))[0]
    limit = math.sqrt(6.0 / 500)
    largest, std = _limit_and_std(layer.weight)
    assert limit * 0.98 < largest <= limit and std == pytest.approx(limit / math.sqrt(3), rel=0.02)
    assert torch.count_nonzero(layer.bias) == 0
    trainer = _trainer(taobao, tmp_path)
    dense = [m for m in trainer.model.modules() if isinstance(m, nn.Linear)]
    assert dense
    for m in dense:
        bound = math.sqrt(6.0 / (m.in_features + m.out_features))
        assert float(m.weight.abs().max()) <= bound + 1e-7
        assert m.bias is None or torch.count_nonzero(m.bias) == 0


def test_keras_mlp_layers_take_their_initializer_field_default_he_uniform():
    """EasyRec's keras MLP: ``initializer`` (default he_uniform: U(+-sqrt(6 / fan_in)))."""
    from fusionrec.ctr.config import MLPParams

    torch.manual_seed(0)
    he = initialize_as_tensorflow_(nn.Sequential(*mlp_layers(400, MLPParams(hidden_units=[300]), False)))
    largest, std = _limit_and_std(he[0][0].weight)
    limit = math.sqrt(6.0 / 400)
    assert limit * 0.98 < largest <= limit and std == pytest.approx(limit / math.sqrt(3), rel=0.02)
    normal = initialize_as_tensorflow_(nn.Sequential(*mlp_layers(400, MLPParams(hidden_units=[300], initializer="glorot_normal"), False)))
    weight = normal[0][0].weight
    target = math.sqrt(2.0 / 700)  # Keras's truncated variance scaling: std after cutting at 2 std
    assert float(weight.std()) == pytest.approx(target, rel=0.03) and float(weight.abs().max()) <= 2 * target / 0.8796 + 1e-7
    with pytest.raises(ValueError, match="initializer 'xavier'"):
        MLPParams(hidden_units=[3], initializer="xavier")


def test_every_keras_initializer_name_has_a_filler():
    from fusionrec.ctr.config._base import KERAS_INITIALIZERS

    assert set(KERAS_INITIALIZERS) == set(INITIALIZERS)


def test_a_module_that_initializes_its_own_kernels_keeps_them():
    """BERT's dense layers start from a truncated normal of std 0.02 (``kernel_initializer = None``)."""
    from fusionrec.ctr.modules.transformer import dense

    torch.manual_seed(0)
    layer = initialize_as_tensorflow_(nn.Sequential(dense(512, 512)))[0]
    assert float(layer.weight.std()) == pytest.approx(0.02 * 0.8796, rel=0.03)


def test_embedding_tables_start_as_easyrecs_embedding_column(taobao, tmp_path):  # noqa: F811
    """EasyRec's embedding_column default: truncated normal, std 0.01 / sqrt(dim), cut at 2 std;
    the wide tables (embedding columns of wide_output_dim) too."""
    trainer = _trainer(taobao, tmp_path)
    tables = trainer._embedding_tables()
    big = max(tables, key=lambda t: t.weight.numel())
    std = 0.01 / math.sqrt(big.embedding_dim)
    assert float(big.weight.std()) == pytest.approx(std * 0.8796, rel=0.05)
    for table in tables:
        assert float(table.weight.abs().max()) <= 2 * 0.01 / math.sqrt(table.embedding_dim) + 1e-9
    wide = [m for m in trainer.model.wide_groups.modules() if isinstance(m, nn.Embedding)]
    assert wide and all(torch.count_nonzero(t.weight) == t.weight.numel() for t in wide)


def _tf_adam(steps_grads, lr, b1=0.9, b2=0.999, eps=1e-8):
    """tf.train.AdamOptimizer, as its documentation writes it (numpy)."""
    w = np.zeros_like(steps_grads[0]) + 0.5
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(steps_grads, start=1):
        lr_t = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr_t * m / (np.sqrt(v) + eps)
    return w


def test_adam_steps_as_tensorflows_including_its_epsilon():
    """A tiny gradient makes the epsilon matter: torch's eps in its place would differ."""
    from fusionrec.ctr.config import AdamOptimizer
    from fusionrec.ctr.optimizers import Optimizers, make_part
    from fusionrec.ctr.trainer import learning_rate_at

    grads = [np.array([1e-7, -3e-8, 2.0], dtype=np.float64), np.array([2e-8, 1e-7, -1.0]), np.array([0.0, 5e-8, 0.5])]
    weight = nn.Parameter(torch.full((3,), 0.5, dtype=torch.float64))
    optimizer = Optimizers(make_part("adam_optimizer", AdamOptimizer(), [weight], [], 1.0))
    for step, g in enumerate(grads):
        optimizer.set_learning_rates(step, learning_rate_at)
        weight.grad = torch.tensor(g)
        optimizer.step()
    expected = _tf_adam(grads, 0.002)
    assert np.allclose(weight.detach().numpy(), expected, rtol=1e-9, atol=1e-12)
    assert tf_adam_epsilon(0.999, 1) == pytest.approx(1e-8 / math.sqrt(0.001))


def test_adam_updates_embedding_tables_densely_lazy_adam_by_rows(taobao, tmp_path):  # noqa: F811
    """tf.train.AdamOptimizer (adam_optimizer) moves a row its batch did not look up while its
    first moment is non-zero; LazyAdam (lazy_adam_optimizer) touches the batch's rows only."""
    adam = _trainer(taobao, tmp_path / "a")
    # the tables' gradients are sparse for both; TFAdam applies them to every row
    assert all(t.sparse for t in adam._embedding_tables())
    lazy = {"train_config.optimizer_config": [{"lazy_adam_optimizer": {"learning_rate": {"constant_learning_rate": {"learning_rate": 0.01}}}}]}
    lazy_trainer = _trainer(taobao, tmp_path / "l", **lazy)
    assert all(t.sparse for t in lazy_trainer._embedding_tables())

    for trainer, moves in ((adam, True), (lazy_trainer, False)):
        table = trainer._embedding_tables()[0]
        opt = trainer.optimizer
        table.weight.grad = None
        # step 1: row 1 has a gradient; step 2: only row 2
        for row in (1, 2):
            opt.zero_grad()
            ids = torch.tensor([row])
            torch.nn.functional.embedding(ids, table.weight, sparse=table.sparse).sum().backward()
            opt.set_learning_rates(0, lambda s, _: 0.01)
            before = table.weight.detach().clone()
            opt.step()
        changed = (table.weight.detach() != before).any(dim=1)
        assert bool(changed[2])
        assert bool(changed[1]) is moves
        assert not bool(changed[3])


@pytest.mark.parametrize("dim", [1, 3])
def test_adam_applies_a_tables_sparse_gradient_as_tensorflows_dense_update(dim):
    """TFAdam's table update from the looked-up rows (duplicate ids summed; rows never looked up
    still moving while their moments are non-zero) equals tf.train.AdamOptimizer's dense update,
    and equals its own update from the same gradient given dense; across several chunks of rows."""
    from fusionrec.ctr.config import AdamOptimizer
    from fusionrec.ctr.optimizers import Optimizers, make_part
    from fusionrec.ctr.trainer import learning_rate_at

    n_rows = 10_000  # more than one parallel chunk of the kernel
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, n_rows, 300), np.array([5, 5, 5, 9_999]), np.array([0, 4_096, 4_095, 8_191])]
    tables = [nn.Embedding(n_rows, dim, sparse=sparse) for sparse in (True, False)]
    with torch.no_grad():
        tables[1].weight.copy_(tables[0].weight)
    start = tables[0].weight.detach().numpy().astype(np.float64)
    optimizers = [Optimizers(make_part("adam_optimizer", AdamOptimizer(), [], [t], 1.0)) for t in tables]
    upstream = [rng.normal(size=(len(ids), dim)) for ids in batches]
    dense_grads = []
    for step, (ids, up) in enumerate(zip(batches, upstream)):
        for table, optimizer in zip(tables, optimizers):
            optimizer.zero_grad()
            optimizer.set_learning_rates(step, learning_rate_at)
            rows = torch.nn.functional.embedding(torch.from_numpy(ids), table.weight, sparse=table.sparse)
            (rows * torch.from_numpy(up).float()).sum().backward()
            optimizer.step()
        grad = np.zeros((n_rows, dim))
        np.add.at(grad, ids, up)
        dense_grads.append(grad)
    expected = _tf_adam([g for g in dense_grads], 0.002) - 0.5 + start
    sparse_weights, dense_weights = (t.weight.detach().numpy() for t in tables)
    assert np.allclose(sparse_weights, expected, rtol=1e-5, atol=1e-6)
    assert np.allclose(sparse_weights, dense_weights, rtol=1e-5, atol=1e-6)
    # a row looked up at step 1 only moved at steps 2 and 3 too: its expected value is the dense
    # update of all three steps, which differs from one step's
    row = next(r for r in batches[0] if r not in np.concatenate(batches[1:]))
    after_one_step = _tf_adam([dense_grads[0]], 0.002)[row] - 0.5 + start[row]
    assert not np.allclose(sparse_weights[row], after_one_step, rtol=1e-6, atol=1e-7)
    assert np.array_equal(sparse_weights[~np.isin(np.arange(n_rows), np.concatenate(batches))],
                          start[~np.isin(np.arange(n_rows), np.concatenate(batches))])  # fmt: skip


def test_embedding_regularization_penalizes_the_embedding_outputs(taobao, tmp_path):  # noqa: F811
    """EasyRec applies l2_regularizer(embedding_regularization) to each embedding column's
    output: scale * sum(output^2) / 2 over the batch, a pooled list as its pooled vector."""
    scale = 0.5
    trainer = _trainer(taobao, tmp_path, **{"model_config.embedding_regularization": scale})
    model = trainer.model.train()
    features = next(iter(_batches(trainer)))
    outputs = []
    hooks = [m.register_forward_hook(lambda mod, i, o: outputs.append(o.detach())) for m in trainer.embedding_regularizer.slots]
    with trainer.embedding_regularizer.attached():
        model(features)
        penalty = trainer.embedding_regularizer.penalty(features, torch.zeros(()), scale)
    for h in hooks:
        h.remove()
    total = sum(float(o.pow(2).sum()) for o in outputs)
    groups = trainer.embedding_regularizer.sequence_groups
    assert groups, "the taobao config has a DIN group: its key and history embeddings count too"
    for group in groups:  # each valid position of each list once, padding not
        for table, name in zip(group.key_tables, group.keys):
            total += float(table.weight[features[name]].pow(2).sum())
        for table, name in zip(group.hist_tables, group.hists):
            total += float(table.weight[features[name]][features[name + ".mask"]].pow(2).sum())
    expected = scale * 0.5 * total
    assert float(penalty) == pytest.approx(expected, rel=1e-5)
    # nothing is hooked outside training, and an export scripts the model
    assert all(not m._forward_hooks for m in trainer.embedding_regularizer.slots)


def test_a_pooled_list_is_penalized_as_its_pooled_vector():
    """A TagFeature's embedding column outputs the pooled vector (combiner sum): EasyRec's
    penalty is on it, not on the rows it pooled."""
    from fusionrec.ctr.regularization import EmbeddingRegularizer

    torch.manual_seed(0)
    bag = BagSlot("tags", nn.Embedding(10, 4), mean=False)
    features = {"tags": torch.tensor([[1, 2, 0], [3, 3, 0]]), "tags.mask": torch.tensor([[True, True, False], [True, True, False]])}
    regularizer = EmbeddingRegularizer(nn.Sequential(bag), 2.0)
    with regularizer.attached():
        pooled = bag.train()(features)
        penalty = regularizer.penalty(features, torch.zeros(()), 2.0)
    w = bag.table.weight.detach()
    assert torch.allclose(pooled, torch.stack([w[1] + w[2], 2 * w[3]]))
    assert float(penalty) == pytest.approx(float((w[1] + w[2]).pow(2).sum() + (2 * w[3]).pow(2).sum()), rel=1e-6)
    with torch.no_grad():  # outside training (evaluation) nothing is added
        with regularizer.attached():
            bag(features)
            assert float(regularizer.penalty(features, torch.zeros(()), 2.0)) == 0.0


def _batches(trainer):
    from fusionrec.ctr.data import resolve_paths

    paths = resolve_paths(trainer.config.train_input_path, "train_input_path")
    for _, features in trainer._training_batches(trainer._reader(), paths, 1):
        yield features


def test_a_checkpoint_records_the_batch_norm_epsilon_and_an_old_one_keeps_torchs(taobao, tmp_path):  # noqa: F811
    trainer = _trainer(taobao, tmp_path)
    trainer.train(progress=False, evaluate_at_checkpoints=False)
    path = trainer.checkpoints()[-1][1]
    state = torch.load(path, weights_only=True)
    assert state["version"] == 2 and state["batch_norm_epsilon"] == 1e-3
    # a checkpoint of an earlier fusionrec (version 1: trained with torch's epsilon 1e-5)
    del state["batch_norm_epsilon"]
    state["version"] = 1
    buffer = io.BytesIO()
    torch.save(state, buffer)
    old = tmp_path / "old" / path.name
    old.parent.mkdir()
    old.write_bytes(buffer.getvalue())
    again = _trainer(taobao, tmp_path / "again")
    again.load_checkpoint(old)
    assert {m.eps for m in _batch_norms(again.model)} == {1e-5}


@pytest.mark.parametrize("n_threads", [1, 2])
def test_the_adam_table_kernels_agree(n_threads):
    """The one-pass numba-parallel kernel (single process) and the three passes on Python threads
    (a torchrun rank) give the same update."""
    from fusionrec.ctr._adam_kernel import adam_rows_update

    rng = np.random.default_rng(1)
    weights = rng.normal(size=(300_000, 4)).astype(np.float32)
    moments = [rng.random((300_000, 4)).astype(np.float32) * 1e-3 for _ in range(2)]
    rows = np.unique(rng.integers(0, 300_000, 5_000))
    grads = rng.normal(size=(rows.shape[0], 4)).astype(np.float32)
    states = [[weights.copy(), moments[0].copy(), moments[1].copy()] for _ in range(2)]
    adam_rows_update(*states[0], rows, grads, 1e-3, 0.9, 0.999, 1e-8, numba_threads=True)
    adam_rows_update(*states[1], rows, grads, 1e-3, 0.9, 0.999, 1e-8, n_threads=n_threads, numba_threads=False)
    for a, b in zip(*states):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    assert not np.array_equal(states[0][0], weights)
