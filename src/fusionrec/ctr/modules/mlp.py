"""Multi-layer perceptrons as EasyRec builds them, and the activation modules by EasyRec's names.

EasyRec has two: its DNN message (``MLP`` here: per hidden unit Linear -> BatchNorm ->
activation -> dropout, as the models' ``dnn`` blocks read it) and its backbone MLP message
(``EasyRecMLP``: ``use_bias``, ``use_final_bn``, ``final_activation``, batch norm after the
activation), which the backbone's components and DIN encoder use."""

from __future__ import annotations

from typing import List

from torch import Tensor, nn

from fusionrec.ctr.config import ACTIVATIONS as ACTIVATION_NAMES
from fusionrec.ctr.config import MLPParams


def _softmax() -> nn.Module:
    return nn.Softmax(dim=-1)


# the torch module of each activation fusionrec.ctr.config.ACTIVATIONS names
ACTIVATION_MODULES = {
    "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "selu": nn.SELU,
    "gelu": nn.GELU, "prelu": nn.PReLU, "linear": nn.Identity, "swish": nn.SiLU, "softmax": _softmax,
}  # fmt: skip


# EasyRec's activation name -> its torch module
ACTIVATIONS = {name: ACTIVATION_MODULES[meaning] for name, meaning in ACTIVATION_NAMES.items()}


class MLP(nn.Module):
    """EasyRec's DNN: per hidden unit Linear -> BatchNorm (use_bn) -> activation -> dropout."""

    def __init__(self, in_dim: int, hidden_units: list[int], activation: str = "tf.nn.relu", use_bn: bool = True,
                 dropout_ratio: list[float] | None = None):  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden_units]
        self.layer_ends: list[int] = []  # index in self.net of each hidden layer's last module
        for i, units in enumerate(hidden_units):
            layers.append(nn.Linear(dims[i], units, bias=not use_bn))
            if use_bn:
                layers.append(nn.BatchNorm1d(units))
            layers.append(ACTIVATIONS[activation]())
            if dropout_ratio and dropout_ratio[i] > 0:
                layers.append(nn.Dropout(dropout_ratio[i]))
            self.layer_ends.append(len(layers) - 1)
        self.net = nn.Sequential(*layers)
        self.out_dim = dims[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def hidden_outputs(self, x: Tensor) -> List[Tensor]:
        """The output of every hidden layer, first to last (the last is ``forward``'s)."""
        outputs: List[Tensor] = []
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i in self.layer_ends:
                outputs.append(x)
        return outputs


def mlp_layers(in_dim: int, params, use_bias: bool) -> List[nn.Sequential]:
    """EasyRec's keras MLP layers, one Sequential each: Linear (``use_bias``) -> BatchNorm
    (``use_bn``; after the activation with ``use_bn_after_activation``) -> activation ->
    dropout; the last layer takes ``use_final_bn`` and ``final_activation``."""
    layers: List[nn.Sequential] = []
    dims = [in_dim, *params.hidden_units]
    last = len(params.hidden_units) - 1
    for i, units in enumerate(params.hidden_units):
        use_bn = params.use_final_bn if i == last else params.use_bn
        dense = nn.Linear(dims[i], units, bias=use_bias)
        dense.kernel_initializer = params.initializer  # modules.tf_defaults fills it (Keras MLP: he_uniform)
        steps: List[nn.Module] = [dense]
        if use_bn and not params.use_bn_after_activation:
            steps.append(nn.BatchNorm1d(units))
        steps.append(ACTIVATIONS[params.final_activation if i == last else params.activation]())
        if use_bn and params.use_bn_after_activation:
            steps.append(nn.BatchNorm1d(units))
        rate = params.dropout_ratio[i] if i < len(params.dropout_ratio) else 0.0
        if rate > 0:
            steps.append(nn.Dropout(rate))
        layers.append(nn.Sequential(*steps))
    return layers


class EasyRecMLP(nn.Module):
    """EasyRec's backbone MLP (``mlp_layers`` with ``use_bias``; ``final_activation`` linear
    unless set)."""

    def __init__(self, in_dim: int, params: MLPParams):
        super().__init__()
        self.net = nn.Sequential(*mlp_layers(in_dim, params, params.use_bias))
        self.out_dim = params.hidden_units[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
