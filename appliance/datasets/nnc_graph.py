"""NNC's and nnabla's layer graphs as our nested network specs.

Both NNC projects (``[Layer_i]`` / ``[Link_i]``) and nnabla's ``.nntxt`` networks are directed
graphs of layers. Our spec is a list of layers with two containers: ``Residual`` (two branches
added) and ``Concat`` (branches joined on the channel axis). :func:`nested_layers` turns a
series-parallel graph into that form: a fork whose branches meet again at one ``Add`` becomes a
``Residual`` (the empty branch is the identity shortcut), at one ``Concat`` a ``Concat``; NNC's
``RepeatStart`` … ``RepeatEnd`` is unrolled. A graph of another shape is refused, naming the layer
where it leaves that form.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


class GraphError(ValueError):
    """A layer graph that cannot be written as a nested spec."""


@dataclass
class Node:
    """One layer: ``kind`` is a spec layer type or ``Input`` / ``Add`` / ``Concat`` /
    ``RepeatStart`` (``params: {times: n}``) / ``RepeatEnd``; ``inputs`` are the producers' ids
    in pin order; ``label`` names it in errors (``[Layer_3] Convolution 'conv1'``)."""

    id: str
    kind: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    payload: Any = None  # what the caller attaches to the spec layer (e.g. its weights)


@dataclass
class Nested:
    layers: list[dict[str, Any]]
    payloads: list[Any]  # one per leaf layer, in the order the spec builds them


MERGES = ("Add", "Concat")


def add_chain(
    nodes: dict[str, Node], layer_id: str, label: str, specs: list[tuple[str, dict[str, Any], Any]]
) -> tuple[str, str] | None:
    """Add the spec layers one source layer becomes, as a chain of nodes (``layer_id``, then
    ``layer_id.1``…); returns the first and last node ids, or None for a pass-through (no layers).
    The first node's ``inputs`` are the caller's to set."""
    if not specs:
        return None
    ids = [layer_id] + [f"{layer_id}.{k}" for k in range(1, len(specs))]
    for k, (kind, params, payload) in enumerate(specs):
        nodes[ids[k]] = Node(ids[k], kind, label, dict(params), [ids[k - 1]] if k else [], payload)
    return ids[0], ids[-1]


def nested_layers(nodes: dict[str, Node], start: str, end: str) -> Nested:
    """The layers from ``start``'s output to ``end``'s output (``end`` included), nested."""
    consumers: dict[str, list[str]] = defaultdict(list)
    for node in nodes.values():
        for src in node.inputs:
            if src not in nodes:
                msg = f"{node.label}: its input {src!r} is not a layer of this network"
                raise GraphError(msg)
            consumers[src].append(node.id)
    useful = _reaching(nodes, end)
    for key in consumers:
        consumers[key] = [c for c in dict.fromkeys(consumers[key]) if c in useful]
    if start not in useful:
        msg = f"{nodes[start].label} is not connected to the output {nodes[end].label}"
        raise GraphError(msg)
    walker = _Walker(nodes, consumers, end)
    layers, payloads, stop, _ = walker.walk(start)
    if stop != end:
        where = nodes[stop].label if stop else "the graph"
        msg = f"{where}: the network does not reach its output {nodes[end].label} in one line of layers"
        raise GraphError(msg)
    return Nested(layers, payloads)


def _reaching(nodes: dict[str, Node], end: str) -> set[str]:
    """Every node the output depends on (layers feeding nothing, e.g. monitors, drop out)."""
    seen, stack = set(), [end]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(nodes[n].inputs)
    return seen


class _Walker:
    def __init__(self, nodes: dict[str, Node], consumers: dict[str, list[str]], end: str) -> None:
        self.nodes, self.consumers, self.end = nodes, consumers, end

    def walk(self, cur: str, first: str | None = None) -> tuple[list[dict], list[Any], str, str]:
        """Layers after ``cur`` (starting with ``first`` when given) until the output, a merge
        or a ``RepeatEnd``; returns them, the node that stopped the walk (the output itself, or
        the merge or RepeatEnd) and the node whose output reaches it."""
        layers: list[dict] = []
        payloads: list[Any] = []
        pending = first
        while True:
            if pending is None:
                if cur == self.end:
                    return layers, payloads, cur, cur
                nxt = self.consumers.get(cur, [])
                if not nxt:
                    return layers, payloads, cur, cur
                if len(nxt) > 1:
                    cur = self._fork(cur, nxt, layers, payloads)
                    continue
                pending = nxt[0]
            node = self.nodes[pending]
            pending = None
            if len(node.inputs) > 1 or node.kind == "RepeatEnd":
                return layers, payloads, node.id, cur
            if node.kind in MERGES:  # a one-input Add or Concat passes its input on
                cur = node.id
                continue
            if node.kind == "RepeatStart":
                cur = self._repeat(node, layers, payloads)
                continue
            layers.append(dict(node.params, type=node.kind))
            payloads.append(node.payload)
            cur = node.id

    def _repeat(self, start: Node, layers: list[dict], payloads: list[Any]) -> str:
        body, body_payloads, stop, _ = self.walk(start.id)
        if stop is None or self.nodes[stop].kind != "RepeatEnd":
            msg = f"{start.label}: no RepeatEnd closes this RepeatStart"
            raise GraphError(msg)
        times = int(start.params.get("times", 1))
        for k in range(times):
            for layer in body:
                layers.append(_renamed(layer, k) if times > 1 else copy.deepcopy(layer))
            payloads.extend(body_payloads)
        return stop

    def _fork(self, cur: str, nxt: list[str], layers: list[dict], payloads: list[Any]) -> str:
        branches = []  # (producer feeding the merge, layers, payloads)
        merge = None
        for c in nxt:
            node = self.nodes[c]
            if len(node.inputs) > 1:
                body, body_payloads, stop, producer = [], [], c, cur
            else:
                body, body_payloads, stop, producer = self.walk(cur, first=c)
            if stop is None or self.nodes[stop].kind not in MERGES or (merge is not None and stop != merge):
                msg = (
                    f"{self.nodes[cur].label}: its {len(nxt)} branches do not meet again at one Add2 or "
                    "Concatenate (only residual and concatenating branches can be imported)"
                )
                raise GraphError(msg)
            merge = stop
            branches.append((producer, body, body_payloads))
        m = self.nodes[merge]
        if len(m.inputs) != len(branches):
            source = self.nodes[cur].label
            msg = f"{m.label}: takes {len(m.inputs)} inputs but {len(branches)} branches from {source} reach it"
            raise GraphError(msg)
        order = {src: i for i, src in enumerate(m.inputs)}
        branches.sort(key=lambda b: order.get(b[0], 0))
        if m.kind == "Add":
            if len(branches) != 2:
                msg = f"{m.label}: adds {len(branches)} branches; only two (a residual unit) can be imported"
                raise GraphError(msg)
            (_, a, pa), (_, b, pb) = branches
            if not a and not b:
                msg = f"{m.label}: adds a layer's output to itself"
                raise GraphError(msg)
            body, shortcut = (a, b) if a else (b, a)
            body_p, shortcut_p = (pa, pb) if a else (pb, pa)
            layers.append({"type": "Residual", "body": body, "shortcut": shortcut or None})
            payloads.extend(body_p + shortcut_p)
        else:
            axis = m.params.get("axis", 1)
            if axis != 1:
                msg = f"{m.label}: concatenates on axis {axis}; only the channel axis can be imported"
                raise GraphError(msg)
            layers.append({"type": "Concat", "branches": [b or [{"type": "Identity"}] for _, b, _ in branches]})
            for _, b, pb in branches:
                payloads.extend(pb if b else [None])
        return merge


def _renamed(layer: dict, k: int) -> dict:
    out = copy.deepcopy(layer)
    if "name" in out:
        out["name"] = f"{out['name']}[{k}]"
    for key in ("body", "shortcut"):
        if out.get(key):
            out[key] = [_renamed(x, k) for x in out[key]]
    if "branches" in out:
        out["branches"] = [[_renamed(x, k) for x in b] for b in out["branches"]]
    return out
