"""A model as a list of bound steps: ``torch.fx`` traces it, :mod:`.rules` gives each node its rule.

Users write classes with ``forward`` (``F.relu``, ``torch.flatten``, residual ``out + x``), not only
``nn.Sequential``; tracing sees both the same way. Each node becomes a :class:`Step` that computes its
value from earlier ones: a box for anything that depends on the input, a plain value for constants and
shapes. The first node without a rule ends the attempt: :func:`trace_steps` then returns its reason,
naming the node, and the caller enumerates densely.

Two shapes of the graph are kept apart because the bounds exploit them: the final ``nn.Linear`` (the
head, folded into margins by :mod:`.bounds`) and the chain of one-input layers right after the input
(the spatial prefix, bounded on receptive-field windows by :mod:`.local`).

A softmax or log-softmax over the classes at the very end (the PyTorch MNIST example ends in
``F.log_softmax(x, dim=1)``) is peeled off before the head is looked for: it keeps the argmax and, for
log-softmax, every logit difference, so the bounds stop at the logits before it. It has no interval rule
of its own (each output reads every logit), and without the peel such a model would be searched densely.
"""

from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import fx, nn
from torch.nn import functional as F

from . import rules
from .rules import Box

_BOX = object()      # while rules are chosen: a value that depends on the input pixel (a box)
_RUNTIME = object()  # a plain value known only at run time (a shape read off a box)
_PAIR = object()     # (values, indices) of max/min/median/sort along a dim: only the values (a box) may be read
_PARTS = object()    # a tuple of boxes (chunk, split, unbind): read one piece at a time


@dataclass
class Step:
    """One traced node: ``rule(*args, **kwargs)`` with earlier nodes' values substituted for the nodes."""

    node: str                  # the fx node's name, for messages
    rule: Callable[..., Any]
    args: tuple
    kwargs: dict
    layer: nn.Module | None = None  # set for one-input layers: what the spatial prefix is made of
    free: list[str] = field(default_factory=list)  # values not needed after this step


@dataclass
class Traced:
    """The model's steps from the input to the head's input, the head, and the input's name."""

    steps: list[Step]
    head: nn.Linear | None
    input: str
    output: str  # the node whose value feeds the head (or is the logits)
    final: nn.Module | None = None  # a peeled softmax / log-softmax over the classes: the model is final(logits)

    def prefix(self) -> list[nn.Module]:
        """The leading chain of one-input layers: step k reads only step k-1's value, which nothing else reads."""
        readers: dict[str, int] = {}
        for s in self.steps:
            for name in set(_names(s.args) + _names(s.kwargs)):
                readers[name] = readers.get(name, 0) + 1
        chain: list[nn.Module] = []
        prev = self.input
        for step in self.steps:
            if step.layer is None or step.args != (prev,) or readers.get(prev) != 1 or prev == self.output:
                break
            chain.append(step.layer)
            prev = step.node
        return chain

    def run(self, box: Box, start: int = 0, at: str | None = None) -> Box:
        """Values from step ``start`` on, given ``box`` as the value of ``at`` (default: the input)."""
        env: dict[str, Any] = {at or self.input: box}
        for step in self.steps[start:]:
            args = _resolve(step.args, env)
            kwargs = {k: _resolve(v, env) for k, v in step.kwargs.items()}
            try:
                env[step.node] = step.rule(*args, **kwargs)
            except rules.BatchDimError as exc:
                raise rules.BatchDimError(f"node {step.node!r}: {exc}") from None
            for name in step.free:
                if name != self.output:
                    env.pop(name, None)
        out = env[self.output]
        return out if isinstance(out, Box) else Box(out, torch.zeros_like(out))


class _Name(str):
    """A reference to an earlier node's value inside a step's arguments."""


def _names(v: Any) -> list[str]:
    if isinstance(v, _Name):
        return [v]
    if isinstance(v, (tuple, list)):
        return [n for x in v for n in _names(x)]
    if isinstance(v, dict):
        return [n for x in v.values() for n in _names(x)]
    return []


def _resolve(v: Any, env: dict[str, Any]) -> Any:
    if isinstance(v, _Name):
        return env[v]
    if isinstance(v, tuple):
        return tuple(_resolve(x, env) for x in v)
    if isinstance(v, list):
        return [_resolve(x, env) for x in v]
    if isinstance(v, dict):
        return {k: _resolve(x, env) for k, x in v.items()}
    return v


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


class _Tracer(fx.Tracer):
    """fx's tracer, keeping torchvision's ``Normalize`` whole as it keeps ``torch.nn``'s layers."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return rules.is_normalize(m) or super().is_leaf_module(m, qualname)


def trace_steps(model: nn.Module) -> Traced | str:
    """The bound steps of ``model``, or a one-line reason why there are none (the first node without a rule)."""
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model), type(model).__name__)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: no graph, dense search
        return f"torch.fx cannot trace the model ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    nodes = list(gm.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        return f"the model's forward takes {len(inputs)} inputs, the bounds need exactly one"
    (out,) = [n for n in nodes if n.op == "output"]
    result = out.args[0]
    if not isinstance(result, fx.Node):
        return "the model does not return one tensor"
    final = _class_softmax(gm, result)
    if final is not None:
        result = result.args[0]
    head = None
    last = result
    if result.op == "call_module" and isinstance(gm.get_submodule(result.target), nn.Linear):
        head, last = gm.get_submodule(result.target), result.args[0]
        if not isinstance(last, fx.Node) or len(result.args) != 1 or result.kwargs:
            return f"node {result.name}: the final linear layer must read one tensor"

    kind: dict[str, Any] = {}  # node -> _BOX, or the constant value where known at trace time
    steps: list[Step] = []
    wanted = _ancestors(last)
    for node in nodes:
        if _writes_in_place(gm, node):
            into = node.args[0] if node.args else None
            if node.name not in wanted or (isinstance(into, fx.Node) and len(into.users) > 1):
                return (f"node {node.name!r} ({_describe(gm, node)}): it writes in place into a tensor that other "
                        f"nodes read, and the bounds follow values, not writes")
    for node in nodes:
        if node.op in ("output",) or node.name not in wanted:
            continue
        if node.op == "placeholder":
            kind[node.name] = _BOX
            continue
        made = _step(gm, node, kind)
        if isinstance(made, str):
            return f"node {node.name!r} ({_describe(gm, node)}): {made}"
        steps.append(made)
    if kind.get(last.name) is not _BOX:
        return "the model's output does not depend on its input"
    steps = _read(steps, last.name)
    _mark_frees(steps)
    return Traced(steps, head, inputs[0].name, last.name, final)


_SOFTMAX_CALLS = {F.softmax: nn.Softmax, torch.softmax: nn.Softmax, F.log_softmax: nn.LogSoftmax,
                  torch.log_softmax: nn.LogSoftmax}


def _class_softmax(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """``node`` as a softmax / log-softmax layer over dim 1 of (N, K) logits, or None when it is anything else.

    Only dim 1 (or -1) is taken: over any other dim the argmax would change. A model whose output has
    more than two dimensions fails the plan's probe (:mod:`.bounds`), so it is never misread.
    """
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if type(m) in (nn.Softmax, nn.LogSoftmax) and len(node.args) == 1 and not node.kwargs \
                and m.dim in (None, 1, -1):
            return type(m)(dim=1)
        return None
    if node.op == "call_function" and node.target in _SOFTMAX_CALLS:
        layer = _SOFTMAX_CALLS[node.target]
    elif node.op == "call_method" and node.target in ("softmax", "log_softmax"):
        layer = nn.Softmax if node.target == "softmax" else nn.LogSoftmax
    else:
        return None
    if not node.args or not isinstance(node.args[0], fx.Node) or len(node.args) > 2:
        return None
    kwargs = dict(node.kwargs)
    dim = node.args[1] if len(node.args) == 2 else kwargs.pop("dim", None)
    kwargs.pop("_stacklevel", None)
    if dim not in (1, -1) or kwargs.get("dtype") is not None or set(kwargs) - {"dtype"}:
        return None
    return layer(dim=1)


#: (a tuple, not a set: an fx target need not be hashable)
_IN_PLACE_OPERATORS = (operator.setitem, operator.iadd, operator.isub, operator.imul, operator.itruediv,
                       operator.ifloordiv, operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor)


def _writes_in_place(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` changes a tensor it reads: ``x.clamp_()``, ``x[:, 0] = v``, ``x += y``, ``inplace=True``.

    Such a write is fine when the node's result is what the model goes on with and nothing else reads the
    tensor before it (``out += identity``, ``nn.ReLU(inplace=True)`` in a chain): the rules then see the same
    value. A write whose result is dropped, or into a tensor another node reads too, changes values the
    rules have already bounded as they were.
    """
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.endswith("__")
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        if node.target in _IN_PLACE_OPERATORS or (name.endswith("_") and not name.endswith("__")):
            return True
        try:  # ``F.relu(x, True)`` as well as ``F.relu(x, inplace=True)``
            return inspect.signature(node.target).bind(*node.args, **node.kwargs).arguments.get("inplace") is True
        except (TypeError, ValueError):  # no signature to read, or not these arguments
            return node.kwargs.get("inplace") is True
    if node.op == "call_module":
        return getattr(gm.get_submodule(node.target), "inplace", False) is True
    return False


def _ancestors(node: fx.Node) -> set[str]:
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        todo.extend(n.all_input_nodes)
    return seen


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"{type(gm.get_submodule(node.target)).__name__} module {node.target!r}"
    if node.op == "call_function":
        return f"function {getattr(node.target, '__module__', '') or ''}.{getattr(node.target, '__name__', node.target)}"
    return f"{node.op} {node.target}"


def _step(gm: fx.GraphModule, node: fx.Node, kind: dict[str, Any]) -> Step | str:
    """The step of one node, recording in ``kind`` whether its value is a box; a reason string when no rule."""
    abstract = fx.node.map_arg((node.args, node.kwargs), lambda n: kind[n.name])
    a_args, a_kwargs = abstract
    refs = fx.node.map_arg((node.args, node.kwargs), lambda n: _Name(n.name))
    r_args, r_kwargs = refs
    inputs = [kind[n.name] for n in node.all_input_nodes]
    if any(v is _PARTS or v is _PAIR for v in inputs):
        index = _piece(node, a_args, a_kwargs)
        if index is None:
            return "it uses the pieces of a chunk, split or unbind other than one at a time" \
                if any(v is _PARTS for v in inputs) else \
                "it reads the indices of a max, min, median or sort, which have no interval"
        kind[node.name] = _BOX
        return Step(node.name, rules.element, (r_args[0], index), {})
    if node.op == "get_attr":
        value = _fetch(gm, node.target)
        kind[node.name] = value
        return Step(node.name, _constant(value), (), {})
    if not any(v is _BOX or v is _RUNTIME for v in inputs):
        # a constant computed from constants (``self.w * 2``): its value now decides which rules apply;
        # it is recomputed at every run, so certified training sees the weights it is changing
        try:
            value = _call(gm, node, a_args, a_kwargs)
        except Exception as exc:  # noqa: BLE001
            return f"cannot evaluate a constant ({type(exc).__name__})"
        kind[node.name] = value
        return Step(node.name, lambda *args, **kwargs: _call(gm, node, args, kwargs), r_args, r_kwargs)
    if not any(v is _BOX for v in inputs):
        # shape arithmetic at run time (``x.size(0) * 2``, ``x.shape[1]``): plain values, no box
        if node.op == "call_function" and getattr(node.target, "__module__", None) in ("_operator", "operator"):
            kind[node.name] = _RUNTIME
            return Step(node.name, node.target, r_args, r_kwargs)
        return "no rule for this computation on shapes"
    kind[node.name] = _BOX
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        why = rules.supported_layer(m)
        if why is not None:
            return why
        if len(r_args) != 1 or r_kwargs or a_args[0] is not _BOX:
            return "a layer must read exactly one tensor"
        return Step(node.name, rules.layer(m), r_args, {}, layer=m)
    if node.op in ("call_function", "call_method"):
        affine = _channel_affine(gm, node, a_args, a_kwargs)
        if affine is not None:
            m, box_at = affine
            return Step(node.name, rules.layer(m), (r_args[box_at],), {}, layer=m)
        if a_args and a_args[0] is _BOX and not _has_box(a_args[1:]) and not _has_box(a_kwargs):
            m = rules.layer_for_call(node.op, node.target, a_args[1:], a_kwargs)
            if m is not None:
                return Step(node.name, rules.layer(m), (r_args[0],), {}, layer=m)
        if node.op == "call_function" and node.target is getattr:
            if a_args[1] in ("shape",):
                kind[node.name] = _RUNTIME
                return Step(node.name, rules.attribute, r_args, {})
            return f"no interval rule for attribute {a_args[1]!r}"
        rule = rules.rule_for_call(node.op, node.target, a_args, a_kwargs, lambda v: v is _BOX)
        if rule is None:
            return "no interval rule for this call"
        if rule is rules.size:
            kind[node.name] = _RUNTIME
        elif getattr(rule, "pair", False):
            kind[node.name] = _PAIR
        elif getattr(rule, "parts", False):
            kind[node.name] = _PARTS
        return Step(node.name, rule, r_args, r_kwargs)
    return f"no interval rule for {node.op} nodes"


def _channel_affine(gm: fx.GraphModule, node: fx.Node, a_args: tuple, a_kwargs: dict) -> tuple[rules.ChannelAffine, int] | None:
    """``node`` as a :class:`.rules.ChannelAffine` layer and the position of its box argument, or None.

    Taken: a box and a number or a per-channel constant: a buffer or a parameter, or one computed from them
    in ``forward`` (``self.mean.view(1, -1, 1, 1)``). The constant is computed again at every run, so the
    layer is the same map whatever the weights become.
    """
    op = rules.arithmetic(node.op, node.target)
    if op is None or a_kwargs or len(a_args) != 2 or [a is _BOX for a in a_args].count(True) != 1:
        return None
    box_at = 0 if a_args[0] is _BOX else 1
    if node.op == "call_method" and box_at == 1 and node.target.endswith("_") and not node.target.endswith("__"):
        return None  # ``self.k.sub_(x)`` would change the constant
    if box_at == 1:
        op = {"add": "add", "mul": "mul", "sub": "rsub"}.get(op)  # k / x has no affine form
    other = node.args[1 - box_at]
    if op is None or not rules.per_channel(a_args[1 - box_at]):
        return None
    if isinstance(other, fx.Node):  # (its value is known, so it reads no input: a constant)
        return rules.ChannelAffine(op, lambda: _evaluate(gm, other)), box_at
    return rules.ChannelAffine(op, _constant(other)), box_at


def _piece(node: fx.Node, a_args: tuple, a_kwargs: dict) -> int | None:
    """Which element of a tuple of boxes ``node`` reads: any piece of a chunk, split or unbind by a plain
    integer, only the values (0) of a max, min, median or sort; None when it reads anything else."""
    if node.op != "call_function" or len(a_args) != 2 or a_kwargs:
        return None
    if a_args[0] is _PARTS:
        return a_args[1] if node.target is operator.getitem and isinstance(a_args[1], int) else None
    if a_args[0] is _PAIR and ((node.target is operator.getitem and a_args[1] == 0)
                               or (node.target is getattr and a_args[1] == "values")):
        return 0
    return None


def _has_box(v: Any) -> bool:
    """Whether ``v`` holds a box or a run-time value (either rules out reading it as a constant)."""
    if v is _BOX or v is _RUNTIME or v is _PAIR or v is _PARTS:
        return True
    if isinstance(v, (tuple, list)):
        return any(_has_box(x) for x in v)
    if isinstance(v, dict):
        return any(_has_box(x) for x in v.values())
    return False


def _fetch(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _evaluate(gm: fx.GraphModule, node: fx.Node) -> Any:
    """The value of a node that reads no input (a buffer, or arithmetic on buffers), computed now."""
    if node.op == "get_attr":
        return _fetch(gm, node.target)
    args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: _evaluate(gm, n))
    return _call(gm, node, args, kwargs)


def _call(gm: fx.GraphModule, node: fx.Node, args: tuple, kwargs: dict) -> Any:
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    if node.op == "call_module":
        return gm.get_submodule(node.target)(*args, **kwargs)
    raise TypeError(node.op)


def _read(steps: list[Step], output: str) -> list[Step]:
    """The steps whose value the output needs: a constant (and what it is computed from) that only a
    :class:`.rules.ChannelAffine` reads, which computes it for itself, is left out, so that the layer follows the input directly in the spatial prefix."""
    needed, kept = {output}, []
    for s in reversed(steps):
        if s.node in needed:
            kept.append(s)
            needed.update(_names(s.args) + _names(s.kwargs))
    return kept[::-1]


def _mark_frees(steps: list[Step]) -> None:
    """Let each step drop the values no later step reads, so full-map boxes do not pile up."""
    last: dict[str, int] = {}
    for i, s in enumerate(steps):
        for name in _names(s.args) + _names(s.kwargs):
            last[name] = i
    for name, i in last.items():
        steps[i].free.append(name)
