"""Vocabularies of the structural features every parameter graph carries.

Nodes carry ``(type, layer, position, activation)``; edges carry ``(type, layer, position)``.
Positions are 1-based for neurons whose order is fixed (network inputs and outputs, tokens,
sequence positions) and 0 for interchangeable ones (hidden neurons of a layer share one), so
the features themselves never break a true permutation symmetry. Edge positions hold the
kernel offset of a convolution weight, the spatial / sequence offset of a weight that
reads a flattened activation, or the gate (and direction) of a recurrent layer's weight.
:func:`activation_kind` says which :class:`Activation` a module, function or method name is.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class NodeType(IntEnum):
    HIDDEN = 0  # a neuron / channel inside the network
    INPUT = 1  # an input feature or channel of the network
    OUTPUT = 2  # an output feature of the network
    BIAS = 3  # one per layer with a bias: its edges hold the bias values
    NORM_GAMMA = 4  # one per normalization layer: its edges hold the scales
    NORM_BETA = 5  # one per normalization layer: its edges hold the shifts
    HEAD = 6  # one per attention head: tied to the head's query/key/value dimensions
    GROUP = 7  # one per GroupNorm group: tied to the group's channels
    TOKEN = 8  # one per vocabulary entry of an embedding table
    POSITION = 9  # one per position of a learned positional embedding
    PARAM_TOKEN = 10  # one per learned token (cls token) prepended to a sequence
    ACT_SLOPE = 11  # one per PReLU: its edges hold the slopes
    ACT_SHARED = 12  # one per PReLU with a single slope: tied to every channel it scales


class EdgeType(IntEnum):
    LINEAR = 0
    CONV = 1
    BIAS = 2
    NORM_GAMMA = 3
    NORM_BETA = 4
    RESIDUAL = 5  # fixed edge of a residual addition: carries no parameter
    EMBEDDING = 6
    POS_EMBEDDING = 7
    PARAM_TOKEN = 8
    ATTN_Q = 9
    ATTN_K = 10
    ATTN_V = 11
    ATTN_OUT = 12
    HEAD_MEMBER = 13  # fixed: head node -> its query/key/value dimensions
    QK_PAIR = 14  # fixed: query dimension i -> key dimension i (they permute together)
    GROUP_MEMBER = 15  # fixed: GroupNorm group node -> its channels
    PRODUCT = 16  # fixed edge of an elementwise product of two neuron groups
    CONV_TRANSPOSE = 17  # a transposed convolution's weight (kernel position as for CONV)
    ACT_SLOPE = 18  # a PReLU slope: to its channel, or (one slope) to the shared node
    ACT_MEMBER = 19  # fixed: a single-slope PReLU's shared node -> the channels it scales
    # recurrent layers (RNN / LSTM / GRU): the position is the gate, 1 ... G forward and
    # G + 1 ... 2G reverse (their input biases are BIAS edges with that position)
    RNN_INPUT = 20  # weight_ih: input -> hidden unit
    RNN_HIDDEN = 21  # weight_hh: a unit's output at t - 1 -> hidden unit (self-loops too)
    RNN_HIDDEN_BIAS = 22  # bias_hh: the recurrent term's bias (inside GRU's reset product)
    RNN_PROJ = 23  # LSTM weight_hr: cell unit -> projected unit
    COPY = 24  # fixed: a neuron -> its copy in a concatenation repeating it (position: copy)


class Activation(IntEnum):
    NONE = 0
    RELU = 1
    GELU = 2
    TANH = 3
    SIGMOID = 4
    SILU = 5
    LEAKY_RELU = 6
    ELU = 7
    SOFTPLUS = 8
    SIN = 9
    MAX_POOL = 10
    AVG_POOL = 11
    SOFTMAX = 12
    OTHER = 13


NUM_NODE_TYPES = 16
NUM_EDGE_TYPES = 32
NUM_ACTIVATIONS = 16

# What each activation module, function or tensor method is recorded as. The tables live
# beside the enum so converters (``TransformerEncoderLayer.activation``) and the tracer read
# them from here, and the graph core imports one way.
_ACTIVATION_MODULES: dict[type, Activation] = {
    nn.ReLU: Activation.RELU,
    nn.ReLU6: Activation.RELU,
    nn.GELU: Activation.GELU,
    nn.Tanh: Activation.TANH,
    nn.Sigmoid: Activation.SIGMOID,
    nn.SiLU: Activation.SILU,
    nn.LeakyReLU: Activation.LEAKY_RELU,
    nn.PReLU: Activation.LEAKY_RELU,  # its slopes are parameters (edges), not a feature
    nn.ELU: Activation.ELU,
    nn.Softplus: Activation.SOFTPLUS,
    nn.Softmax: Activation.SOFTMAX,
    nn.LogSoftmax: Activation.SOFTMAX,
    nn.modules.pooling._MaxPoolNd: Activation.MAX_POOL,
    nn.modules.pooling._AdaptiveMaxPoolNd: Activation.MAX_POOL,
    nn.modules.pooling._AvgPoolNd: Activation.AVG_POOL,
    nn.modules.pooling._AdaptiveAvgPoolNd: Activation.AVG_POOL,
}

_ACTIVATION_FUNCTIONS: dict[Any, Activation] = {
    torch.relu: Activation.RELU,
    F.relu: Activation.RELU,
    F.relu6: Activation.RELU,
    F.gelu: Activation.GELU,
    torch.tanh: Activation.TANH,
    F.tanh: Activation.TANH,
    torch.sigmoid: Activation.SIGMOID,
    F.sigmoid: Activation.SIGMOID,
    F.silu: Activation.SILU,
    F.leaky_relu: Activation.LEAKY_RELU,
    F.elu: Activation.ELU,
    F.softplus: Activation.SOFTPLUS,
    torch.sin: Activation.SIN,
    torch.softmax: Activation.SOFTMAX,
    F.softmax: Activation.SOFTMAX,
    F.log_softmax: Activation.SOFTMAX,
    F.max_pool1d: Activation.MAX_POOL,
    F.max_pool2d: Activation.MAX_POOL,
    F.adaptive_max_pool2d: Activation.MAX_POOL,
    F.avg_pool1d: Activation.AVG_POOL,
    F.avg_pool2d: Activation.AVG_POOL,
    F.adaptive_avg_pool1d: Activation.AVG_POOL,
    F.adaptive_avg_pool2d: Activation.AVG_POOL,
}
_ACTIVATION_METHODS = {
    "relu": Activation.RELU,
    "tanh": Activation.TANH,
    "sigmoid": Activation.SIGMOID,
    "sin": Activation.SIN,
    "softmax": Activation.SOFTMAX,
    "log_softmax": Activation.SOFTMAX,
}


def activation_kind(fn: Any) -> Activation:
    """The activation recorded for a module, function or method name (OTHER if unknown)."""
    if isinstance(fn, nn.Module):
        for cls, kind in _ACTIVATION_MODULES.items():
            if isinstance(fn, cls):
                return kind
        return Activation.OTHER
    if isinstance(fn, str):
        return _ACTIVATION_METHODS.get(fn, Activation.NONE)
    return _ACTIVATION_FUNCTIONS.get(fn, Activation.OTHER)
