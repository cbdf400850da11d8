"""The shared core: any nn.Module -> ParameterGraph -> GMN -> per-parameter outputs."""

from graphs.converters import register_converter
from graphs.errors import GraphConstructionError, UnsupportedModuleError, UntraceableModuleError
from graphs.features import Activation, EdgeType, NodeType
from graphs.gmn import GMN, GMNConfig, GMNOutput
from graphs.neuron_gmn import NeuronGMN, NeuronGMNConfig
from graphs.parameter_graph import ParameterGraph, batch_graphs, unbatch_edges

__all__ = [
    "Activation",
    "EdgeType",
    "GMN",
    "GMNConfig",
    "GMNOutput",
    "GraphConstructionError",
    "NeuronGMN",
    "NeuronGMNConfig",
    "NodeType",
    "ParameterGraph",
    "UnsupportedModuleError",
    "UntraceableModuleError",
    "batch_graphs",
    "register_converter",
    "unbatch_edges",
]
