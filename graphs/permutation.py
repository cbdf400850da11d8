"""Moving parameters along node permutations of a parameter graph.

A permutation of the graph's nodes that maps every edge to an edge of the same type and
position (an automorphism) is a permutation symmetry of the network: parameters moved along
it compute the same function. These helpers build such permutations and move parameter
dicts (or any parameter-shaped outputs) along them; tests use them to check equivariance.

A tensor used more than once (tied weights) is one set of entries sitting on several edges:
a permutation is a symmetry only if it moves every edge of an entry onto edges of one
entry, which :func:`edge_permutation` checks. :func:`permute_state_dict` also moves the
buffers that follow neurons (BatchNorm running statistics), so a trained network in eval
mode keeps its function.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from einops import rearrange
from torch import Tensor

from graphs.features import EdgeType
from graphs.parameter_graph import ParameterGraph

_TIES = (EdgeType.RESIDUAL, EdgeType.PRODUCT, EdgeType.QK_PAIR)


def node_permutation(pg: ParameterGraph, moves: Mapping[str, Tensor] | None = None) -> Tensor:
    """A node permutation ``sigma [N]`` (node ``i`` goes to ``sigma[i]``).

    ``moves`` maps a name of ``pg.node_groups`` (e.g. a layer's path) to a permutation of
    that group: its ``j``-th node goes where its ``perm[j]``-th node was. The result is then
    extended through residual, product and query-key ties so partners move together.
    """
    sigma = torch.arange(pg.num_nodes)
    for name, perm in (moves or {}).items():
        ids = pg.node_groups[name]
        sigma[ids[perm]] = ids
    sigma = tie_closure(pg, sigma)
    kept = all(
        torch.equal(sigma[pg.node_groups[name][perm]], pg.node_groups[name])
        for name, perm in (moves or {}).items()
    )
    if not kept or torch.unique(sigma).numel() != pg.num_nodes or not _ties_respected(pg, sigma):
        raise ValueError(
            "conflicting moves: groups tied by residual / product / query-key edges must be "
            "given the same permutation (give it to one of them; ties carry it to the others)"
        )
    return sigma


def head_moves(pg: ParameterGraph, attention: str, order: Tensor) -> dict[str, Tensor]:
    """Moves for :func:`node_permutation` that permute the heads of one attention module.

    ``attention`` is the module's path (its groups ``{attention}.heads``, ``.q``, ``.k`` and
    ``.v``); head ``j`` goes where head ``order[j]`` was, its query, key and value dimensions
    moving with it as one block (a true symmetry of multi-head attention).
    """
    heads = pg.node_groups[f"{attention}.heads"].numel()
    dims = torch.arange(pg.node_groups[f"{attention}.q"].numel())
    block = rearrange(rearrange(dims, "(h d) -> h d", h=heads)[order], "h d -> (h d)")
    return {f"{attention}.heads": order} | {f"{attention}.{x}": block for x in "qkv"}


def _tie_edges(pg: ParameterGraph) -> Tensor:
    etype = pg.edge_feat[:, 0]
    mask = torch.zeros_like(etype, dtype=torch.bool)
    for t in _TIES:
        mask |= etype == int(t)
    return pg.edge_index[:, mask]


def _ties_respected(pg: ParameterGraph, sigma: Tensor) -> bool:
    src, dst = _tie_edges(pg)
    partner = torch.full((pg.num_nodes,), -1, dtype=torch.long)
    partner[src] = dst
    return bool((partner[sigma[src]] == sigma[dst]).all())


def tie_closure(pg: ParameterGraph, sigma: Tensor) -> Tensor:
    """Extend ``sigma`` through fixed tie edges (residual, product, query-key pairs)."""
    src, dst = _tie_edges(pg)
    partner_fwd = torch.full((pg.num_nodes,), -1, dtype=torch.long)
    partner_fwd[src] = dst
    partner_bwd = torch.full((pg.num_nodes,), -1, dtype=torch.long)
    partner_bwd[dst] = src
    sigma = sigma.clone()
    for _ in range(pg.num_nodes):
        changed = False
        for a, b in ((src, dst), (dst, src)):
            partner = partner_fwd if a is src else partner_bwd
            moved = sigma[a] != a
            want = partner[sigma[a[moved]]]
            have = sigma[b[moved]]
            if (want >= 0).all() and not torch.equal(want, have):
                sigma[b[moved]] = want
                changed = True
        if not changed:
            break
    return sigma


def _edge_keys(pg: ParameterGraph, src: Tensor, dst: Tensor, feat: Tensor) -> Tensor:
    n = pg.num_nodes
    kmax = int(pg.edge_feat[:, 2].max()) + 1 if pg.num_edges else 1
    return ((src * n + dst) * 64 + feat[:, 0].long()) * kmax + feat[:, 2].long()


def edge_permutation(pg: ParameterGraph, sigma: Tensor, strict: bool = True) -> Tensor:
    """Where each edge goes under the node permutation ``sigma``: ``[E]`` edge ids.

    With ``strict``, every node must land on a node with the same features and every edge
    (parameter or fixed) on an edge of the same type and position, i.e. ``sigma`` must be an
    automorphism; otherwise a ``ValueError``.
    Without it, only parameter edges must land on parameter edges (so a non-symmetry can
    still move parameters, e.g. to test that a model notices).
    """
    if strict and not torch.equal(pg.node_feat[sigma], pg.node_feat):
        raise ValueError("the node permutation is not an automorphism of the parameter graph: "
                         "it moves nodes onto nodes of another type, layer, position or "
                         "activation")
    keys = _edge_keys(pg, pg.edge_index[0], pg.edge_index[1], pg.edge_feat)
    moved = _edge_keys(pg, sigma[pg.edge_index[0]], sigma[pg.edge_index[1]], pg.edge_feat)
    order = torch.argsort(keys)
    pos = torch.searchsorted(keys[order], moved).clamp(max=len(keys) - 1)
    target = order[pos]
    found = keys[target] == moved
    check = found if strict else found[: pg.num_params]
    if not bool(check.all()):
        raise ValueError("the node permutation is not an automorphism of the parameter graph")
    if strict and pg.num_tied:
        p, t = pg.num_params, pg.num_tied
        entry = _entry_of_edge(pg)
        lands = entry[target[:p]]
        if not bool((entry[target[p : p + t]] == lands[pg.tied_index.to(target.device)]).all()):
            raise ValueError(
                "the node permutation moves the uses of a tied tensor differently: not a "
                "symmetry of the network"
            )
    return target


def _entry_of_edge(pg: ParameterGraph) -> Tensor:
    """``[E]``: the parameter entry each edge carries (-1 for fixed structural edges)."""
    entry = torch.full((pg.num_edges,), -1, dtype=torch.long)
    entry[: pg.num_params] = torch.arange(pg.num_params)
    entry[pg.num_params : pg.num_params + pg.num_tied] = pg.tied_index.cpu()
    return entry.to(pg.device)


def entry_permutation(pg: ParameterGraph, sigma: Tensor, strict: bool = True) -> Tensor:
    """Where each parameter entry goes under ``sigma``: ``[P]`` entry ids (see
    :func:`edge_permutation`; an entry of a tied tensor may land on a further use's edge)."""
    target = _entry_of_edge(pg)[edge_permutation(pg, sigma, strict)[: pg.num_params]]
    if bool((target < 0).any()) or torch.unique(target).numel() != pg.num_params:
        raise ValueError("the node permutation does not move parameter entries onto entries")
    return target


def permute_parameters(
    pg: ParameterGraph, params: Mapping[str, Tensor], sigma: Tensor, strict: bool = True
) -> dict[str, Tensor]:
    """Move a parameter-shaped dict along the node permutation ``sigma``.

    Extra trailing dimensions (channels) are carried along. Buffers (BatchNorm running
    statistics) are not moved: use :func:`permute_state_dict` for a whole trained network.
    """
    target = entry_permutation(pg, sigma, strict)
    flat = torch.cat([params[n].reshape(k, -1) for n, k in zip(pg.param_names, pg.param_numels)])
    out = torch.empty_like(flat)
    out[target] = flat
    trailing = params[pg.param_names[0]].shape[len(pg.param_shapes[0]):]
    pieces = torch.split(out, pg.param_numels)
    return {
        n: p.reshape((*shape, *trailing))
        for n, shape, p in zip(pg.param_names, pg.param_shapes, pieces)
    }


def permute_state_dict(
    pg: ParameterGraph, state: Mapping[str, Tensor], sigma: Tensor, strict: bool = True
) -> dict[str, Tensor]:
    """Move a module's ``state_dict()`` along ``sigma``: parameters and neuron-following buffers.

    Parameters move as in :func:`permute_parameters` (a tied tensor's other names, in
    ``pg.param_aliases``, get the same values); each buffer in ``pg.buffer_nodes`` (BatchNorm
    ``running_mean`` / ``running_var``) moves with the nodes its entries follow; everything
    else (``num_batches_tracked``, unknown buffers) is kept. Loading the result into the
    module leaves its function unchanged (in eval mode, for batch statistics) whenever
    ``sigma`` is an automorphism.
    """
    out = dict(state)
    aliases = {canon: alias for alias, canon in pg.param_aliases.items()}
    params = {n: state[n] if n in state else state[aliases[n]] for n in pg.param_names}
    moved = permute_parameters(pg, params, sigma, strict)
    out.update({n: moved[n] for n in pg.param_names if n in state})
    out.update({a: moved[c] for a, c in pg.param_aliases.items() if a in state})
    for name, ids in pg.buffer_nodes.items():
        if name not in state:
            continue
        ids = ids.cpu()
        where = torch.full((pg.num_nodes,), -1, dtype=torch.long)
        where[ids] = torch.arange(ids.numel())
        dest = where[sigma.cpu()[ids]]
        if bool((dest < 0).any()):
            raise ValueError(f"the node permutation moves the nodes of buffer '{name}' elsewhere")
        value = state[name]
        new = torch.empty_like(value)
        new[dest.to(value.device)] = value
        out[name] = new
    return out


# -- sampling automorphisms ----------------------------------------------------------------
_MIX = tuple(m - (1 << 64) for m in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _hash(x: Tensor, salt: int) -> Tensor:
    """A fixed pseudo-random int64 function of ``x`` (splitmix-style; wrapping arithmetic)."""
    x = x * _MIX[0] + salt
    x = (x ^ (x >> 31)) * _MIX[1]
    x = (x ^ (x >> 29)) * _MIX[2]
    return x ^ (x >> 32)


def _refine(edges: Tensor, colors: Tensor, edge_key: Tensor) -> Tensor:
    """Colour refinement (1-WL on the typed, directed graph) until the partition is stable.
    Colours are canonical: two graphs equal up to a node relabelling get equal colours."""
    src, dst = edges
    n = colors.numel()
    count = int(torch.unique(colors).numel())
    while True:
        out_sum = torch.zeros(n, dtype=torch.long).index_add_(
            0, src, _hash(edge_key * 1_000_003 + colors[dst], 1))
        in_sum = torch.zeros(n, dtype=torch.long).index_add_(
            0, dst, _hash(edge_key * 1_000_003 + colors[src], 2))
        sig = torch.stack([colors, out_sum, in_sum], dim=1)
        colors = torch.unique(sig, dim=0, return_inverse=True)[1]
        new = int(colors.max()) + 1 if n else 0
        if new == count:
            return colors
        count = new


def _structure(pg: ParameterGraph) -> tuple[Tensor, Tensor, Tensor]:
    """Edges (with links between the uses of a tied tensor), their keys, stable colours."""
    feats = pg.node_feat.cpu().long()
    colors = torch.unique(feats, dim=0, return_inverse=True)[1]
    ef = pg.edge_feat.cpu().long()
    edges = pg.edge_index.cpu()
    edge_key = (ef[:, 0] * 1_000 + ef[:, 1]) * 1_000 + ef[:, 2]
    if pg.num_tied:  # a tied tensor's uses carry one set of entries: link their endpoints
        p, t = pg.num_params, pg.num_tied
        first, later = edges[:, pg.tied_index.cpu()], edges[:, p:p + t]
        edges = torch.cat([edges, torch.stack([first[0], later[0]]),
                           torch.stack([first[1], later[1]])], dim=1)
        edge_key = torch.cat([edge_key, torch.full((t,), -1), torch.full((t,), -2)])
    return edges, edge_key, _refine(edges, colors, edge_key)


def structural_colors(pg: ParameterGraph) -> Tensor:
    """``[N]`` colour refinement of the graph: nodes of different colours are never
    exchanged by an automorphism (the converse need not hold). Two neurons of one layer with
    different colours cannot be swapped: the graph says swapping them changes the network."""
    return _structure(pg)[2]


def random_automorphism(pg: ParameterGraph, generator: torch.Generator | None = None,
                        tries: int = 20) -> Tensor:
    """A random automorphism ``sigma`` of the graph (node ``i`` goes to ``sigma[i]``).

    Individualisation and refinement: the graph and its image start with the same colour
    refinement; repeatedly one node of the first non-singleton class is individualised in
    the graph and a random node of that class in the image, both refined, until every class
    is a single node; the colours then name the map. A map that is not an automorphism (an
    unlucky choice in a graph refinement cannot resolve) is discarded and the sampling
    retried. With parameters moved along it (:func:`permute_state_dict`), the network must
    compute the same function: the test that a graph admits only true symmetries.
    """
    edges, edge_key, base = _structure(pg)
    for _ in range(tries):
        a, b = base.clone(), base.clone()
        ok = True
        while ok:
            sizes = torch.bincount(a)
            classes = torch.nonzero(sizes > 1).flatten()
            if classes.numel() == 0:
                break
            c = int(classes[0])
            u = int(torch.nonzero(a == c)[0])
            members = torch.nonzero(b == c).flatten()
            v = int(members[torch.randint(members.numel(), (1,), generator=generator)])
            fresh = int(a.max()) + 1
            a[u], b[v] = fresh, fresh
            a, b = _refine(edges, a, edge_key), _refine(edges, b, edge_key)
            ok = torch.equal(torch.bincount(a), torch.bincount(b))
        if not ok:
            continue
        sigma = torch.empty(pg.num_nodes, dtype=torch.long)
        sigma[torch.argsort(a)] = torch.argsort(b)
        try:
            edge_permutation(pg, sigma.to(pg.device))
        except ValueError:
            continue
        return sigma.to(pg.device)
    raise RuntimeError("no automorphism found: refinement could not resolve the graph")
