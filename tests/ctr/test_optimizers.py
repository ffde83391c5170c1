"""EasyRec's optimizers with TensorFlow's updates, and several optimizers over EasyRec's variable groups."""

import numpy as np
import pytest
import torch

from fusionrec.ctr.config import load_config
from fusionrec.ctr.optimizers import Ftrl, Optimizers, OptimizerPart, RMSProp
from fusionrec.ctr.trainer import Trainer, learning_rate_at
from fusionrec.errors import FusionrecError
from tests.ctr.test_pipeline import EXAMPLES, WIDE_AND_DEEP, edits, taobao  # noqa: F401  (fixture)

DEEPFM = next(p for p in EXAMPLES if p.name == "taobao_deepfm.yaml")


def ftrl_reference(w, grads, lr, power, initial, l1, l2, shrinkage):
    """TensorFlow's ApplyFtrlV2, one coordinate at a time."""
    w = w.copy()
    n = np.full_like(w, initial)
    z = np.zeros_like(w)
    for g in grads:
        for i in range(len(w)):
            g_shrunk = g[i] + 2 * shrinkage * w[i]
            n_new = n[i] + g[i] ** 2
            sigma = (n_new ** -power - n[i] ** -power) / lr
            z[i] += g_shrunk - sigma * w[i]
            n[i] = n_new
            quadratic = n_new ** -power / lr + 2 * l2
            w[i] = (np.sign(z[i]) * l1 - z[i]) / quadratic if abs(z[i]) > l1 else 0.0
    return w


@pytest.mark.parametrize("power, l1, l2, shrinkage", [(-0.5, 0.0, 0.0, 0.0), (-0.5, 0.3, 0.1, 0.0), (-0.3, 0.05, 0.0, 0.2)])
def test_ftrl_matches_tensorflows_per_coordinate_update(rng, power, l1, l2, shrinkage):
    w0 = rng.normal(size=6)
    grads = [rng.normal(size=6) for _ in range(5)]
    param = torch.nn.Parameter(torch.tensor(w0))
    optimizer = Ftrl([param], lr=0.1, learning_rate_power=power, initial_accumulator_value=0.1, l1=l1, l2=l2,
                     l2_shrinkage=shrinkage)  # fmt: skip
    for g in grads:
        param.grad = torch.tensor(g)
        optimizer.step()
    np.testing.assert_allclose(param.detach().numpy(), ftrl_reference(w0, grads, 0.1, power, 0.1, l1, l2, shrinkage), rtol=1e-10)


def test_ftrl_l1_makes_weights_exactly_zero(rng):
    param = torch.nn.Parameter(torch.tensor(rng.normal(size=50)))
    optimizer = Ftrl([param], lr=0.1, l1=10.0)
    param.grad = torch.tensor(rng.normal(size=50) * 0.1)
    optimizer.step()
    assert bool((param == 0).all())


def test_rms_prop_matches_tensorflows_update(rng):
    w = rng.normal(size=5)
    param = torch.nn.Parameter(torch.tensor(w))
    optimizer = RMSProp([param], lr=0.01, decay=0.9, momentum=0.5, epsilon=1.0)
    ms, mom = np.ones(5), np.zeros(5)  # TensorFlow starts the mean square at 1
    for _ in range(4):
        g = rng.normal(size=5)
        param.grad = torch.tensor(g)
        optimizer.step()
        ms = 0.9 * ms + 0.1 * g * g
        mom = 0.5 * mom + 0.01 * g / np.sqrt(ms + 1.0)
        w = w - mom
    np.testing.assert_allclose(param.detach().numpy(), w, rtol=1e-12)


def test_decoupled_weight_decay_is_not_scaled_by_the_learning_rate(rng):
    """AdamW / MomentumW as TensorFlow's DecoupledWeightDecayExtension: w -= wd * w, then the step."""
    w0 = torch.tensor(rng.normal(size=4))
    decayed = torch.nn.Parameter(w0.clone())
    plain = torch.nn.Parameter(w0.clone())
    parts = Optimizers([OptimizerPart("adamw_optimizer", torch.optim.Adam([decayed], lr=0.01), None, 0.1)])
    reference = torch.optim.Adam([plain], lr=0.01)
    g = torch.tensor(rng.normal(size=4))
    decayed.grad, plain.grad = g.clone(), g.clone()
    parts.step()
    with torch.no_grad():
        plain.mul_(0.9)
    reference.step()
    torch.testing.assert_close(decayed, plain)


def test_decoupled_weight_decay_touches_only_the_looked_up_rows_of_a_sparse_table():
    table = torch.nn.Embedding(6, 3, sparse=True)
    before = table.weight.detach().clone()
    part = OptimizerPart("adamw_optimizer", torch.optim.SparseAdam([table.weight], lr=1e-12), None, 0.5)
    table(torch.tensor([1, 4, 4])).sum().mul(0).backward()  # zero gradient on rows 1 and 4
    Optimizers([part]).step()
    after = table.weight.detach()
    torch.testing.assert_close(after[[1, 4]], before[[1, 4]] * 0.5)
    torch.testing.assert_close(after[[0, 2, 3, 5]], before[[0, 2, 3, 5]])


FTRL_AND_ADAM = [{"ftrl_optimizer": {"l1_reg": 10, "learning_rate": {"constant_learning_rate": {"learning_rate": 0.05}}}},
                 {"adam_optimizer": {"learning_rate": {"constant_learning_rate": {"learning_rate": 0.001}}}}]  # fmt: skip


def _parameters(part: OptimizerPart) -> set[int]:
    return {id(p) for group in part.optimizer.param_groups for p in group["params"]}


def test_wide_and_deep_two_optimizers_split_wide_tables_from_the_rest(taobao, tmp_path):
    """EasyRec's WideAndDeep.get_grouped_vars(2): the WIDE group's tables, then everything else."""
    trainer = Trainer(load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m", **{"train_config.optimizer_config": FTRL_AND_ADAM})))
    first, *rest = trainer.optimizer.parts
    wide = {id(m.weight) for m in trainer.model.wide_groups.modules() if isinstance(m, torch.nn.Embedding)}
    assert first.name == "ftrl_optimizer" and _parameters(first) == wide
    others = set().union(*(_parameters(p) for p in rest))
    assert not others & wide and others | wide == {id(p) for p in trainer.model.parameters()}
    assert trainer.optimizer.set_learning_rates(0, learning_rate_at) == pytest.approx(0.05)
    assert [g["lr"] for p in rest for g in p.optimizer.param_groups] == pytest.approx([0.001] * sum(len(p.optimizer.param_groups) for p in rest))
    trainer.train(progress=False)
    wide_tables = [m.weight for m in trainer.model.wide_groups.modules() if isinstance(m, torch.nn.Embedding)]
    assert all(bool((t == 0).all()) for t in wide_tables)  # l1_reg 10 on tiny gradients: FTRL keeps them at 0


def test_three_optimizers_are_for_wide_and_deep_only(taobao, tmp_path):
    three = FTRL_AND_ADAM + [{"adagrad_optimizer": {}}]
    trainer = Trainer(load_config(WIDE_AND_DEEP, edits(taobao, tmp_path / "m", **{"train_config.optimizer_config": three})))
    tables = {id(t.weight) for t in trainer._embedding_tables()}
    groups = [set().union(*(_parameters(p) for p in trainer.optimizer.parts if p.name == name))
              for name in ("ftrl_optimizer", "adam_optimizer", "adagrad_optimizer")]  # fmt: skip
    assert groups[0] | groups[1] == tables and not groups[0] & groups[1]
    assert groups[2] == {id(p) for p in trainer.model.parameters()} - tables
    with pytest.raises(FusionrecError, match="three optimizers .* WideAndDeep only"):
        load_config(DEEPFM, edits(taobao, tmp_path / "d", **{"train_config.optimizer_config": three}))


def test_two_optimizers_of_other_models_split_embedding_tables_from_the_rest(taobao, tmp_path):
    trainer = Trainer(load_config(DEEPFM, edits(taobao, tmp_path / "m", **{"train_config.optimizer_config": FTRL_AND_ADAM})))
    tables = {id(t.weight) for t in trainer._embedding_tables()}
    ftrl = set().union(*(_parameters(p) for p in trainer.optimizer.parts if p.name == "ftrl_optimizer"))
    assert ftrl == tables
