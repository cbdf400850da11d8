r"""The weight-space INR editor: a residual metanetwork update of SIREN parameters.

.. math::
    \theta'_t = \theta_t + \gamma_t \, u_t \, f_t(\theta / s)

for every parameter tensor ``t`` (``layers.{i}.weight`` / ``layers.{i}.bias``): ``f`` is a
metanetwork (a :class:`graphs.GMN` over the SIREN's parameter graph, or a baseline from
:mod:`editing.baselines`), ``gamma`` one learned scalar per layer for the weights and one for
the biases (initialised 0.01), ``s_t`` a fixed per-tensor input scale (the standard deviation
of that tensor over the training INRs, a buffer set by :meth:`Editor.set_scale`) so that the
metanetwork reads values of order one, and ``u_t`` a fixed per-tensor output scale
(``EditorConfig.output_scale``): ``"std"`` uses ``u = s``; ``"preact"`` (default) uses the
architecture-derived :func:`preact_scales`, which make a unit output move every layer's
pre-activation by a comparable amount. ``s`` and ``u`` are one scalar per tensor, so they
commute with hidden-neuron permutations: a GMN editor stays exactly equivariant.

Why ``"preact"``: with ``u = s`` a unit output moves the first layers' sine arguments by
``w0 * s`` (several radians) but the last bias by only 0.1 (its std over INRs), while invert
needs it to move by ~1. Every first-order optimizer then reduces the loss by flattening the
hidden layers (rendering a grey image) before the last layer can flip, a basin it does not
leave (GMN invert test MSE ~0.08 at 600 steps; the same happens to 12 free per-tensor
scale / shift scalars trained directly). See docs/results/editing/.

Editors are saved as ``<stem>.safetensors`` (state dict) + ``<stem>.json`` (config and
metadata), both written as one all-or-nothing checkpoint (:func:`save_editor`) and validated
on load (:func:`load_editor_file`: finite tensors, a config the code accepts, the tensors an
editor of that config has, with their shapes).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from common.persistence import (
    PersistenceError,
    json_bytes,
    parse_json,
    parse_tensors,
    read_checkpoint,
    require,
    tensor_bytes,
    write_checkpoint,
)
from editing.baselines import FlatMLPMetanet, NoEditMetanet, NPNFNMetanet
from editing.inr import DEFAULT_W0, DEFAULT_WIDTHS, SIREN, param_shapes
from graphs import GMN, ParameterGraph

__all__ = [
    "GAMMA_PARAMS",
    "SKIP_LAYERS",
    "MODELS",
    "OUTPUT_SCALES",
    "Editor",
    "EditorConfig",
    "GMNMetanet",
    "editor_files",
    "editor_from",
    "load_editor_file",
    "save_editor",
]

MODELS: tuple[str, ...] = ("gmn", "np_nfn", "mlp", "mlp_aug", "identity")
"""Editor models: GMN metanet, the NP-NFN neural functional (Zhou et al. 2023), flattened-
weights MLP, the same MLP trained with random hidden-neuron permutations as augmentation, and
no edit."""
OUTPUT_SCALES: tuple[str, ...] = ("preact", "std")
"""Per-tensor output scales ``u_t``: architecture-derived, or the tensor's std over INRs."""
SKIP_LAYERS: tuple[str, ...] = ("all", "last")
"""Which tensors get the GMN editor's affine skip: every one, or the output layer's."""
GAMMA_PARAMS: tuple[str, ...] = ("linear", "log")
"""How gammas are learned: directly, or as ``log gamma``."""


@dataclass(frozen=True)
class EditorConfig:
    """Architecture of an editor (saved as JSON beside its weights).

    Attributes:
        model: ``"gmn"``, ``"np_nfn"``, ``"mlp"``, ``"mlp_aug"`` or ``"identity"`` (see
            :data:`MODELS`).
        widths: SIREN widths of the INRs it edits.
        w0: SIREN frequency factor (used for rendering, stored for completeness).
        gmn_hidden: GMN node / edge state width.
        gmn_layers: GMN message-passing blocks.
        gmn_heads: output-capacity expansion: ``k > 1`` widens the GMN's final edge states
            k-fold and averages ``k`` output heads (``graphs.GMN(output_heads=k)``).
        mlp_hidden: MLP hidden width.
        mlp_depth: MLP hidden layers.
        nfn_channels: NP-NFN hidden channels (published: 128).
        nfn_layers: NP-NFN hidden layers (published: 3).
        nfn_fourier: NP-NFN Gaussian Fourier features per value (published: 128; 0: the raw
            value; files saved before the option: 0).
        nfn_fourier_scale: standard deviation of their frequencies (published: 3).
        nfn_io: NP-NFN input / output neuron position encoding (published: on; files saved
            before the option: off).
        gamma_init: initial value of every gamma.
        gmn_skip: add a learned per-tensor affine term to the GMN output,
            ``f_t = GMN_t(x) + a_t x_t + c_t`` (``a``, ``c`` zero-initialised, trained at
            ``gamma_lr``). Equivariant (scalars per tensor); gives an exact linear path from
            each input value to its output, which the GMN's final LayerNorm distorts.
            On by default: with ``output_scale="preact"`` and no skip, 1 of 3 invert seeds
            still fell into the flat-hidden-layers basin (test MSE 0.107; the other two
            2e-4 / 7e-5); with the skip all 3 reach <= 1.2e-4. It costs dilate, though
            (0.0062 vs 0.0051 for seed 0, 600 steps): docs/results/editing/.
        gmn_skip_layers: which tensors get the affine skip: ``"last"`` (default: the output
            layer's weight and bias, where invert's exact edit, an affine map of the last
            layer, lives) or ``"all"`` (editors saved before the option). On every tensor
            the skip traps dilate at 0.0062 (3 seeds); on the last layer only dilate reaches
            0.0052 and invert still <= 1.2e-4 on 3 of 3 seeds (docs/editing.md).
        gmn_raw_values: give the GMN the raw parameter values as a second input channel
            beside the normalised ones (its Fourier value features then also see each
            tensor's own scale, as NP-NFN's do).
        gmn_value_freqs: Fourier frequencies ``pi 2^k``, ``k = -2 .. n - 3``, of the GMN's
            value features (``graphs.GMN(value_freqs=n)``).
        gmn_context: every GMN block also reads the mean node / edge state of the graph and
            of each parameter tensor (``graphs.GMN(context=True)``): NP-NFN's whole-tensor
            terms (default off; files saved before the option: off).
        gamma_param: ``"linear"`` learns gamma itself; ``"log"`` learns ``log gamma``.
        output_scale: ``"preact"`` (default) or ``"std"`` (``u_t = s_t``, the behaviour of
            editors saved before this option existed); see the module docstring.
    """

    model: str = "gmn"
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    w0: float = DEFAULT_W0
    gmn_hidden: int = 32
    gmn_layers: int = 3
    gmn_heads: int = 1
    mlp_hidden: int = 512
    mlp_depth: int = 3
    nfn_channels: int = 128
    nfn_layers: int = 3
    nfn_fourier: int = 128
    nfn_fourier_scale: float = 3.0
    nfn_io: bool = True
    gamma_init: float = 0.01
    gmn_skip: bool = True
    gmn_skip_layers: str = "last"
    gmn_raw_values: bool = False
    gmn_value_freqs: int = 6
    gmn_context: bool = False
    gamma_param: str = "linear"
    output_scale: str = "preact"

    def __post_init__(self) -> None:
        """Raises ``ValueError`` naming the first field the code does not accept."""
        if self.model not in MODELS:
            raise ValueError(f"unknown editor model {self.model!r}; choose from {MODELS}")
        if self.output_scale not in OUTPUT_SCALES:
            raise ValueError(f"output_scale must be one of {OUTPUT_SCALES}, "
                             f"got {self.output_scale!r}")
        if self.gmn_skip_layers not in SKIP_LAYERS:
            raise ValueError(f"gmn_skip_layers must be one of {SKIP_LAYERS}, "
                             f"got {self.gmn_skip_layers!r}")
        if self.gamma_param not in GAMMA_PARAMS:
            raise ValueError(f"gamma_param must be one of {GAMMA_PARAMS}, got {self.gamma_param!r}")
        widths = tuple(int(w) for w in self.widths)
        if len(widths) < 2 or widths[0] != 2 or widths[-1] != 1 or min(widths) < 1:
            raise ValueError(f"widths must be positive, start with 2 and end with 1 (a SIREN "
                             f"image INR), got {widths}")
        object.__setattr__(self, "widths", widths)
        for name in ("gmn_hidden", "gmn_layers", "gmn_heads", "mlp_hidden", "mlp_depth",
                     "nfn_channels", "nfn_layers", "gmn_value_freqs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.nfn_fourier < 0:
            raise ValueError(f"nfn_fourier must be >= 0, got {self.nfn_fourier}")
        if not (math.isfinite(self.nfn_fourier_scale) and self.nfn_fourier_scale > 0):
            raise ValueError(f"nfn_fourier_scale must be a positive finite number, got "
                             f"{self.nfn_fourier_scale}")
        if not (math.isfinite(self.w0) and self.w0 > 0):
            raise ValueError(f"w0 must be a positive finite number, got {self.w0}")
        if not math.isfinite(self.gamma_init) or (self.gamma_param == "log"
                                                   and self.gamma_init <= 0):
            raise ValueError(f"gamma_init must be finite (and > 0 for gamma_param='log'), "
                             f"got {self.gamma_init}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d

    def model_fields(self) -> dict[str, Any]:
        """:meth:`to_dict` without the options of other models (``gmn_*`` for an NP-NFN...):
        two configs that differ only outside it build the same editor."""
        own = {"gmn": "gmn_", "np_nfn": "nfn_", "mlp": "mlp_", "mlp_aug": "mlp_"}.get(self.model)
        return {k: v for k, v in self.to_dict().items()
                if not k.startswith(("gmn_", "nfn_", "mlp_")) or (own and k.startswith(own))}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "editor config") -> EditorConfig:
        """The config stored in a file (``to_dict``'s output; unknown keys are ignored).

        Raises:
            PersistenceError: a field has the wrong type or a value the code does not accept;
                the message names ``where`` and the field.
        """
        if not isinstance(d, Mapping):
            raise PersistenceError(f"{where}: the editor config is not a JSON object")
        kinds = {"model": str, "w0": (int, float), "gamma_init": (int, float), "gmn_skip": bool,
                 "gamma_param": str, "output_scale": str, "widths": list, "nfn_io": bool,
                 "gmn_skip_layers": str, "gmn_raw_values": bool, "gmn_context": bool,
                 "nfn_fourier_scale": (int, float),
                 **dict.fromkeys(("gmn_hidden", "gmn_layers", "gmn_heads", "mlp_hidden",
                                  "mlp_depth", "nfn_channels", "nfn_layers", "nfn_fourier",
                                  "gmn_value_freqs"),
                                 int)}
        kw = {k: require(d, k, kind, where) for k, kind in kinds.items() if k in d}
        if not all(type(w) is int for w in kw.get("widths", [])):
            raise PersistenceError(f"{where}: field 'widths' = {kw['widths']!r} is not a list "
                                   "of integers")
        # files written before these options existed used their original behaviour
        kw.setdefault("gmn_skip", False)
        kw.setdefault("gamma_param", "linear")
        kw.setdefault("output_scale", "std")
        kw.setdefault("gmn_skip_layers", "all")
        kw.setdefault("nfn_fourier", 0)
        kw.setdefault("nfn_io", False)
        try:
            return cls(**kw)
        except ValueError as err:
            raise PersistenceError(f"{where}: {err}") from None


class GMNMetanet(nn.Module):
    """A :class:`graphs.GMN` applied to a batch of same-architecture SIRENs in one call.

    The batch runs as one stacked graph (:meth:`graphs.ParameterGraph.encode_stacked`: the
    repeated structure is built once per ``(batch size, device)`` and cached, each call only
    writes the parameter values): faster than ``torch.func.vmap`` over ``gmn(pg, params)`` or
    re-batching ``Data`` objects with ``batch_graphs`` every step.

    Args:
        widths: SIREN widths.
        hidden: GMN width.
        layers: GMN blocks.
        skip: add the per-tensor affine term ``a_t x_t + c_t`` (see ``EditorConfig.gmn_skip``).
        heads: output heads (OCE, see ``EditorConfig.gmn_heads``).
        skip_layers: ``"all"`` tensors get the skip, or the ``"last"`` layer's only.
        raw_values: a second input channel with the raw parameter values (see
            ``EditorConfig.gmn_raw_values``); :meth:`forward` then needs ``scale``.
        value_freqs: Fourier frequencies of the GMN's value features (``graphs.GMN``).
        context: graph and per-tensor means in every block (``graphs.GMN(context=True)``).
    """

    def __init__(
        self, widths: tuple[int, ...], hidden: int = 32, layers: int = 3, skip: bool = False,
        heads: int = 1, skip_layers: str = "all", raw_values: bool = False,
        value_freqs: int = 6, context: bool = False,
    ) -> None:
        super().__init__()
        self.pg = ParameterGraph.from_module(SIREN(widths))
        self.takes_scale = raw_values
        self.gmn = GMN(in_channels=2 if raw_values else 1, out_channels=1, hidden=hidden,
                       layers=layers, output_heads=heads, value_freqs=value_freqs,
                       context=context)
        n = len(self.pg.param_names)
        # per-tensor linear term a_t x_t + c_t (see EditorConfig.gmn_skip); zero-initialised
        self.skip = nn.Parameter(torch.zeros(n)) if skip else None
        self.shift = nn.Parameter(torch.zeros(n)) if skip else None
        mask = torch.ones(n) if skip_layers == "all" else (torch.arange(n) >= n - 2).float()
        self.register_buffer("skip_mask", mask, persistent=False)

    def forward(self, params: Mapping[str, Tensor],
                scale: Tensor | None = None) -> dict[str, Tensor]:
        """Batched normalised params (``[B, *shape]`` each) -> per-parameter GMN outputs, same
        shapes. ``scale``: per tensor, the factor that undoes the normalisation (needed with
        ``raw_values``)."""
        inputs = [{k: params[k] for k in self.pg.param_names}]
        if self.takes_scale:
            if scale is None:
                raise ValueError("a GMN metanet with raw_values needs the input scale")
            inputs.append({k: v * scale[i] for i, (k, v) in enumerate(inputs[0].items())})
        out = self.gmn(self.pg, *inputs)
        if self.skip is not None and self.shift is not None:
            out = {
                k: v + self.skip_mask[i] * (self.skip[i] * params[k] + self.shift[i])
                for i, (k, v) in enumerate(out.items())
            }
        return out


def preact_scales(widths: tuple[int, ...], w0: float) -> Tensor:
    """Per-tensor output scales ``u_t`` of ``output_scale="preact"`` (weight, bias per layer).

    ``u_t`` is the change of tensor ``t`` that moves its layer's pre-activation, in the units
    the next nonlinearity sees, by O(1) for a unit metanet output of random sign: for the
    ``sin(w0 z)`` layers ``1 / (w0 sqrt(fan_in))`` (weights) and ``1 / w0`` (biases); for the
    linear output layer, whose pre-activation is the pixel intensity, ``1 / sqrt(fan_in)``
    and ``1``.
    """
    out = []
    last = len(widths) - 2
    for i, fan_in in enumerate(widths[:-1]):
        k = 1.0 if i == last else 1.0 / w0
        out += [k / math.sqrt(fan_in), k]
    return torch.tensor(out)


def _build_metanet(config: EditorConfig) -> nn.Module:
    if config.model == "gmn":
        return GMNMetanet(config.widths, config.gmn_hidden, config.gmn_layers, config.gmn_skip,
                          config.gmn_heads, config.gmn_skip_layers, config.gmn_raw_values,
                          config.gmn_value_freqs, config.gmn_context)
    if config.model in ("mlp", "mlp_aug"):
        return FlatMLPMetanet(param_shapes(config.widths), config.mlp_hidden, config.mlp_depth)
    if config.model == "np_nfn":
        return NPNFNMetanet(param_shapes(config.widths), config.nfn_channels, config.nfn_layers,
                            config.nfn_fourier, config.nfn_fourier_scale, config.nfn_io)
    return NoEditMetanet()


class Editor(nn.Module):
    r"""Edits batched SIREN parameters: ``theta' = theta + gamma * u * f(theta / s)``.

    Call it on batched params ``{"layers.{i}.weight": [B, out, in], "layers.{i}.bias":
    [B, out], ...}`` (a single INR without the batch dim is accepted too) and get edited
    params of the same keys and shapes. A fresh editor outputs its input unchanged (the
    metanetworks' output layers are zero-initialised).

    Args:
        config: architecture (:class:`EditorConfig`).
    """

    def __init__(self, config: EditorConfig | None = None) -> None:
        super().__init__()
        self.config = config or EditorConfig()
        self.shapes = param_shapes(self.config.widths)
        n_layers = len(self.config.widths) - 1
        self.metanet = _build_metanet(self.config)
        g0 = self.config.gamma_init
        if self.config.gamma_param == "log":  # gamma = exp(log_gamma), see EditorConfig
            self.log_gamma_weight = nn.Parameter(torch.full((n_layers,), math.log(g0)))
            self.log_gamma_bias = nn.Parameter(torch.full((n_layers,), math.log(g0)))
        else:
            self.gamma_weight = nn.Parameter(torch.full((n_layers,), g0))
            self.gamma_bias = nn.Parameter(torch.full((n_layers,), g0))
        self.register_buffer("scale", torch.ones(2 * n_layers))  # s_t, in self.shapes order
        # u_t: output scale; architecture-only for "preact", so not saved in the state dict
        self.register_buffer("out_scale", preact_scales(self.config.widths, self.config.w0),
                             persistent=False)

    @property
    def param_names(self) -> list[str]:
        return list(self.shapes)

    @torch.no_grad()
    def set_scale(self, params: Mapping[str, Tensor]) -> None:
        """Set the per-tensor scales ``s_t`` to the std of each tensor over batched ``params``."""
        params = self._checked(params)[0]
        std = torch.stack([params[k].float().std() for k in self.shapes])
        self.scale.copy_(std.clamp_min(1e-8).to(self.scale))

    def _checked(self, params: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], bool]:
        """Validate names / shapes; returns batched params and whether a batch dim was added."""
        if not isinstance(params, Mapping):
            raise TypeError(f"expected a dict of parameter tensors, got {type(params).__name__}")
        missing = [k for k in self.shapes if k not in params]
        extra = [k for k in params if k not in self.shapes]
        if missing or extra:
            raise KeyError(
                f"editor for SIREN widths {self.config.widths} expects keys {list(self.shapes)}; "
                f"missing {missing}, unexpected {extra}"
            )
        first = params[self.param_names[0]]
        single = first.dim() == len(self.shapes[self.param_names[0]])
        batch = None if single else first.shape[0]
        out = {}
        for k, shape in self.shapes.items():
            v = params[k]
            want = shape if single else (batch, *shape)
            if tuple(v.shape) != tuple(want):
                raise ValueError(
                    f"parameter {k!r} has shape {tuple(v.shape)}, expected {tuple(want)} "
                    f"(batched [B, *{shape}] for SIREN widths {self.config.widths})"
                )
            out[k] = v.unsqueeze(0) if single else v
        return out, single

    def gammas(self) -> Tensor:
        """``[2 L]`` gammas in parameter order (weight, bias per layer)."""
        if self.config.gamma_param == "log":
            g = torch.stack([self.log_gamma_weight, self.log_gamma_bias]).exp()
        else:
            g = torch.stack([self.gamma_weight, self.gamma_bias])
        return rearrange(g, "kind layer -> (layer kind)")

    def forward(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Batched params -> edited batched params (same keys, shapes, dtype)."""
        batched, single = self._checked(params)
        dtype = next(iter(batched.values())).dtype
        if any(v.dtype != dtype or not v.is_floating_point() for v in batched.values()):
            raise ValueError("every parameter tensor must have the same floating dtype, got "
                             f"{sorted({str(v.dtype) for v in batched.values()})}")
        scale = self.scale.to(dtype)
        # the metanetwork computes in its own dtype; the edit is applied in the input's
        own = self.scale.dtype
        normed = {k: (batched[k] / scale[i]).to(own) for i, k in enumerate(self.shapes)}
        # NP-NFN's Fourier features read raw values (the published editor), and the GMN may
        raw = {"scale": self.scale} if getattr(self.metanet, "takes_scale", False) else {}
        delta = {k: v.to(dtype) for k, v in self.metanet(normed, **raw).items()}
        gammas = self.gammas().to(scale)
        if self.config.output_scale == "preact":
            scale = self.out_scale.to(scale)
        out = {k: batched[k] + gammas[i] * scale[i] * delta[k] for i, k in enumerate(self.shapes)}
        return {k: v[0] for k, v in out.items()} if single else out


def editor_files(editor: Editor, name: str = "editor",
                 metadata: Mapping[str, Any] | None = None) -> dict[str, bytes]:
    """The files of a saved editor: ``{name}.safetensors`` (state dict) and ``{name}.json``
    (``{"config": ..., **metadata}``), as bytes, for :func:`common.persistence.write_checkpoint`."""
    config = editor.config.to_dict()
    tensors = tensor_bytes(editor.state_dict(), {"config": json.dumps(config)})
    info = json_bytes({"config": config, **dict(metadata or {})})
    return {f"{name}.safetensors": tensors, f"{name}.json": info}


def _split_stem(stem: Path | str) -> tuple[Path, str]:
    """``(folder, name)`` of an editor stem given with or without a suffix."""
    stem = Path(stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    return stem.parent, stem.name


def save_editor(
    editor: Editor, stem: Path | str, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write ``<stem>.safetensors`` (state dict) and ``<stem>.json`` (config + ``metadata``).

    Both files are written as one checkpoint (:func:`common.persistence.write_checkpoint`):
    a reader sees both new files or both old ones.

    Returns:
        the safetensors path.
    """
    folder, name = _split_stem(stem)
    write_checkpoint(folder, editor_files(editor, name, metadata))
    return folder / f"{name}.safetensors"


def load_editor_file(
    stem: Path | str, device: torch.device | str | None = None
) -> Editor:
    """Load an editor written by :func:`save_editor` (``stem`` with or without a suffix).

    The files are validated: every tensor finite, a config the code accepts, exactly the
    tensors an editor of that config has, with their shapes. ``editor.info`` holds the JSON.

    Raises:
        PersistenceError: a file is missing or malformed; the message names it and the field
            or tensor.
    """
    folder, name = _split_stem(stem)
    weights, info_path = folder / f"{name}.safetensors", folder / f"{name}.json"
    files = read_checkpoint(folder, [weights.name, info_path.name])
    if weights.name not in files:
        raise PersistenceError(f"no editor weights at {weights}")
    if info_path.name not in files:
        raise PersistenceError(f"editor config {info_path} does not exist")
    text = files[info_path.name].decode(errors="replace")  # bad bytes fail as bad JSON
    info = parse_json(text, str(info_path), "editor config")
    tensors = parse_tensors(files[weights.name], str(weights))
    editor = editor_from(info, tensors, str(info_path), str(weights))
    return editor.to(device) if device is not None else editor


def editor_from(info: Any, tensors: Mapping[str, Tensor], info_where: str,
                weights_where: str) -> Editor:
    """An :class:`Editor` from a parsed ``<stem>.json`` and its (finite) state-dict tensors.

    Checks the config (:meth:`EditorConfig.from_dict`) and that ``tensors`` are exactly the
    state dict of an editor of that config, shape for shape; ``editor.info`` holds ``info``.

    Raises:
        PersistenceError: naming ``info_where`` / ``weights_where`` and the field or tensor.
    """
    config = EditorConfig.from_dict(require(info, "config", Mapping, info_where), info_where)
    editor = Editor(config)
    expected = {k: tuple(v.shape) for k, v in editor.state_dict().items()}
    for key in sorted(set(expected) | set(tensors)):
        if key not in tensors:
            raise PersistenceError(f"{weights_where}: tensor {key!r} is missing (an editor with "
                                   f"the config of {info_where} has it)")
        if key not in expected:
            raise PersistenceError(f"{weights_where}: unexpected tensor {key!r} (an editor with "
                                   f"the config of {info_where} has none)")
        if tuple(tensors[key].shape) != expected[key]:
            raise PersistenceError(f"{weights_where}: tensor {key!r} has shape "
                                   f"{tuple(tensors[key].shape)}, expected {expected[key]}")
    editor.load_state_dict(dict(tensors))
    editor.info = info  # type: ignore[attr-defined]
    return editor


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars of ``module``."""
    return sum(math.prod(p.shape) for p in module.parameters() if p.requires_grad)
