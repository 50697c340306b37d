"""Sound interval rules, one per kind of graph node, in center/radius form.

A :class:`Box` holds every value a tensor can take while one input pixel ranges over an interval:
``center +- radius`` elementwise, ``radius >= 0``. Each rule maps boxes to a box that contains every
output (Gowal et al. 2018 for IBP; auto_LiRPA's design of one bound rule per operator of a traced
graph, Xu et al. 2020):

- affine maps (conv, linear, average pooling, batch norm in eval mode, torchvision's ``Normalize``, a
  number or per-channel constant added, subtracted, multiplied or divided): the center exactly, the
  radius through the absolute linear part, no bias;
- monotone elementwise maps (ReLU, sigmoid, max pooling, ...): the two end points;
- activations with one minimum (GELU, SiLU, Mish, Hardswish): falling, then rising, so the largest value is at an
  end point and the smallest at an end point or, when the box reaches the minimum, the minimum itself;
- order-preserving maps that mix positions (padding, nearest or bilinear resizing, adaptive max
  pooling, ``unfold``, indexing) and order statistics (``amax``, ``logsumexp``, the values of ``max``,
  ``median`` or ``sort`` along a dim, elementwise ``maximum``): no output falls when an input rises, so
  the two end points bound them as well;
- normalisation by the input's own statistics (layer, group and instance norm): the mean subtracted
  exactly as an affine map, the variance bounded from the deviations' squares, and the deviation box
  divided by the square root's interval;
- ``add`` adds centers and radii, ``sub`` subtracts centers and adds radii, a constant factor scales the
  radius by its absolute value, a product of two boxes takes the extremes of its four end products,
  ``cat`` and reshapes act on both.

Functional calls (``F.relu``, ``F.max_pool2d``, ...) are turned into the equivalent layer module
(:func:`layer_for_call`), so one rule serves both spellings and the receptive-field windows of
:mod:`.local` see the same layers either way. Everything here is differentiable in the weights.
"""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

MONOTONE = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Hardtanh, nn.Softplus,
            nn.Hardsigmoid)
VALLEY = (nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish)
#: Resizing modes whose weights are all non-negative (bicubic's are not).
RESIZE_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "area")


class OrderPreserving(nn.Module):
    """A functional call that is order-preserving (``F.pad``, ``F.interpolate``), as a layer for its rule."""

    def __init__(self, fn: Callable[..., torch.Tensor], kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.fn, self.kwargs = fn, kwargs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, **self.kwargs)


ORDER = (nn.AdaptiveMaxPool2d, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d,
         nn.CircularPad2d, nn.Upsample, OrderPreserving)
IDENTITY = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
AFFINE = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.BatchNorm1d,
          nn.BatchNorm2d)
FP32_EPS = torch.finfo(torch.float32).eps
#: A normalisation group whose largest value exceeds its spread this many times gets a rounding allowance.
CONDITION = 10.0
#: Normalisation by each input's own statistics (instance norm only when it keeps no running statistics).
SELF_NORM = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d)


def is_normalize(m: nn.Module) -> bool:
    """Whether ``m`` is torchvision's ``transforms.Normalize``: ``(x - mean) / std`` per channel. fx cannot
    trace it (it checks ``std`` at run time), so the tracer keeps it whole (:mod:`.graph`) and it is a
    per-channel affine map here, as batch norm is."""
    return type(m).__name__ == "Normalize" and type(m).__module__.startswith("torchvision.transforms")


class ChannelAffine(nn.Module):
    """``x + k``, ``x - k``, ``k - x``, ``x * k`` or ``x / k`` for a number or per-channel constant ``k``: the
    normalisation users write in ``forward`` (RobustBench's ``ImageNormalizer``: ``(x - self.mean) / self.std``),
    as a layer, so that it joins the chain the receptive-field windows run on (:mod:`.local`).

    ``constant()`` reads ``k`` at every call (a buffer moved to another device, a parameter being trained).
    """

    OPS: dict[str, Callable[[Any, Any], Any]] = {"add": operator.add, "sub": operator.sub,
                                                "rsub": lambda x, k: k - x, "mul": operator.mul,
                                                "div": operator.truediv}

    def __init__(self, op: str, constant: Callable[[], Any]) -> None:
        super().__init__()
        self.op, self.constant = op, constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.OPS[self.op](x, self.constant())

    def radius(self, r: torch.Tensor) -> torch.Tensor:
        """The radius through the map: unchanged by a shift, scaled by ``|k|`` or ``1 / |k|``."""
        k = self.constant()
        if self.op in ("mul", "div"):
            return r * abs(k) if self.op == "mul" else r / abs(k)
        return r + torch.zeros_like(k) if isinstance(k, torch.Tensor) else r  # broadcast as the center is


def per_channel(k: Any) -> bool:
    """Whether the constant ``k`` is the same at every position of an (N, C, H, W) map: a number, or a
    tensor whose only dimension of size above 1 is the channels' ((C, 1, 1), (1, C, 1, 1), a scalar)."""
    if isinstance(k, bool) or not isinstance(k, (int, float, torch.Tensor)):
        return False
    if not isinstance(k, torch.Tensor):
        return True
    shape = (1,) * (4 - k.dim()) + tuple(k.shape) if k.dim() <= 4 else None
    return shape is not None and shape[0] == shape[2] == shape[3] == 1 and torch.is_floating_point(k)


def channelwise_affine(m: nn.Module) -> bool:
    """Whether ``m`` maps each channel of each position on its own by an affine map (batch norm in eval mode,
    ``Normalize``, :class:`ChannelAffine`): on a pixel's window it is exact, and lines stay lines."""
    return isinstance(m, (nn.BatchNorm2d, ChannelAffine)) or is_normalize(m)


def _channel(values: Any, like: torch.Tensor) -> torch.Tensor:
    """Per-channel constants as (1, C, 1, 1), in ``like``'s dtype and device."""
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(1, -1, 1, 1)


@dataclass(frozen=True)
class Box:
    """Every value of a tensor lies in ``center +- radius``; both (B, ...) with one row per input box."""

    center: torch.Tensor
    radius: torch.Tensor

    @classmethod
    def spanning(cls, lo: torch.Tensor, hi: torch.Tensor) -> "Box":
        """The box from ``lo`` to ``hi`` (elementwise, ``lo <= hi``)."""
        return cls((hi + lo) / 2, (hi - lo) / 2)


class BatchDimError(ValueError):
    """A rule was asked to work along dim 0 of a box, which holds one row per input box: a dim that only
    resolves to 0 against the tensor's ndim (``x.amax(-4)`` of a 4-d map, ``x.median(-2)`` of a 2-d one)
    passes the checks made when the plan is traced, so the rules check again when they run."""


def _off_batch(what: str, dims: Any, ndim: int) -> None:
    """Raise :class:`BatchDimError` when one of ``dims`` (an int or a sequence of them) names dim 0 of an
    ``ndim``-d tensor; a dim out of range is left for torch to refuse."""
    for d in dims if isinstance(dims, (tuple, list)) else (dims,):
        if isinstance(d, int) and -ndim <= d < ndim and d % ndim == 0:
            raise BatchDimError(f"{what} along dim {d} of a {ndim}-d tensor, which is the batch dim (one row per box)")


def supported_layer(m: nn.Module) -> str | None:
    """None when :func:`layer` has a sound rule for module ``m``, else why not."""
    if isinstance(m, nn.Conv2d):
        return None if isinstance(m.padding, tuple) else "convolution with 'same'/'valid' padding"
    if isinstance(m, nn.InstanceNorm2d) and m.track_running_stats:
        return None if m.running_mean is not None else "instance norm without running stats"
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return None if m.track_running_stats and m.running_mean is not None else "batch norm without running stats"
    if isinstance(m, nn.MaxPool2d):
        return None if not m.return_indices else "max pooling that returns indices"
    if isinstance(m, nn.LeakyReLU):
        return None if m.negative_slope >= 0 else "leaky ReLU with a negative slope is not monotone"
    if isinstance(m, nn.ELU):
        return None if m.alpha >= 0 else "ELU with a negative alpha is not monotone"
    if isinstance(m, nn.Softplus):
        return None if m.beta > 0 else "softplus with beta <= 0"
    if isinstance(m, nn.Hardtanh):
        return None if m.min_val <= m.max_val else "hardtanh with min > max"
    if isinstance(m, nn.Upsample):
        return None if m.mode in RESIZE_MODES else f"{m.mode} resizing (negative weights)"
    if isinstance(m, nn.AdaptiveMaxPool2d):
        return None if not m.return_indices else "adaptive max pooling that returns indices"
    if is_normalize(m):
        return None if bool((torch.as_tensor(m.std) != 0).all()) else "Normalize with a zero std"
    if isinstance(m, (*AFFINE, *SELF_NORM, nn.Flatten, *MONOTONE, *VALLEY, *ORDER, *IDENTITY, ChannelAffine)):
        return None
    return f"no interval rule for {type(m).__name__}"


@functools.lru_cache(maxsize=None)
def valley(kind: type, approximate: str = "none") -> tuple[float, float, float]:
    """(lo, hi, floor) for an activation with one minimum: it falls up to ``lo`` and rises from ``hi``
    (the minimum lies between, with room for fp32's flat steps around it), and ``floor`` is at most its
    smallest value. Found on a float64 grid once per activation, not written down, so that both GELU
    spellings (erf and tanh) get their own."""
    m = kind(approximate=approximate) if kind is nn.GELU else kind()
    x = torch.linspace(-4.0, 1.0, 500_001, dtype=torch.float64)
    at = float(x[m(x).argmin()])
    lo, hi = at - 0.05, at + 0.05
    low = float(m(torch.linspace(lo, hi, 100_001)).min())  # float32, as the model computes it
    return lo, hi, low - 1e-6 * max(1.0, abs(low))


def _bn_scale(m: nn.Module) -> torch.Tensor:
    return (m.weight if m.affine else torch.ones_like(m.running_var)) / torch.sqrt(m.running_var + m.eps)


def _affine_abs(m: nn.Module, r: torch.Tensor) -> torch.Tensor:
    """The radius through an affine layer: the layer's linear part with absolute weights, no bias."""
    if isinstance(m, nn.Linear):
        return F.linear(r, m.weight.abs())
    if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":  # reflect, replicate, circular: pad, then convolve
        r = F.pad(r, m._reversed_padding_repeated_twice, mode=m.padding_mode)
        return F.conv2d(r, m.weight.abs(), None, m.stride, 0, m.dilation, m.groups)
    if isinstance(m, nn.Conv2d):
        return F.conv2d(r, m.weight.abs(), None, m.stride, m.padding, m.dilation, m.groups)
    if isinstance(m, nn.ConvTranspose2d):
        return F.conv_transpose2d(r, m.weight.abs(), None, m.stride, m.padding, m.output_padding, m.groups, m.dilation)
    if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return m(r)  # non-negative weights
    # batch norm in eval mode: a per-channel scale
    shape = (1, -1) + (1,) * (r.ndim - 2)
    return r * _bn_scale(m).abs().view(shape)


def _affine_center(m: nn.Module, c: torch.Tensor) -> torch.Tensor:
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d)):  # eval statistics whatever the mode
        return F.batch_norm(c, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
    return m(c)


def _self_norm(m: nn.Module, c: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer, group or instance norm of a box: :func:`_normalised`, then the layer's weight and bias."""
    if isinstance(m, nn.LayerNorm):
        _off_batch("layer norm", -len(m.normalized_shape), c.ndim)
        yc, yr = _normalised(c, r, math.prod(m.normalized_shape), None, m.eps)
        return _scaled(yc, yr, m.weight, m.bias, m.normalized_shape)
    yc, yr = _normalised(c, r, None, m.num_groups if isinstance(m, nn.GroupNorm) else c.shape[1], m.eps)
    weight, bias = (m.weight, m.bias) if not isinstance(m, nn.InstanceNorm2d) or m.affine else (None, None)
    return _scaled(yc, yr, weight, bias, (1, -1) + (1,) * (c.ndim - 2))


def _scaled(c: torch.Tensor, r: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
            shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalisation's affine part: ``weight`` and ``bias`` (either may be None) viewed as ``shape``."""
    if weight is not None:
        c, r = c * weight.view(shape), r * weight.view(shape).abs()
    return (c if bias is None else c + bias.view(shape)), r


def _normalised(c: torch.Tensor, r: torch.Tensor, size: int | None, groups: int | None,
                eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x - mean) / sqrt(var + eps)`` of a box, per group: of the last ``size`` values, or of ``groups``
    groups of the values after the batch.

    The deviation ``d = x - mean`` is affine in x (radius ``r_i (1 - 2/n) + sum(r) / n``); the (biased)
    variance, the mean of ``d^2``, lies between the means of the smallest and largest squares over each
    deviation's interval; ``1 / sqrt(var + eps)`` is positive and falls as the variance rises, so ``d`` times
    it is bounded at the interval's two ends. Sound, not tight: the deviations share one pixel's change.

    Unlike other layers', this one's fp32 rounding can be large against the search's safety margin: in a
    group of (nearly) equal values, torch's ``x - mean`` is rounding noise, which ``1 / sqrt(eps)`` (1e6 at
    eps 1e-12) blows up to the size of a real change. Such ill-conditioned groups, whose largest value is
    more than :data:`CONDITION` times their spread, get a rounding allowance on the deviation and the
    variance: a few ulps per halving of the group (summation error), for torch's arithmetic and this
    rule's own. Elsewhere the rounding is that of any layer, which the safety margin covers.
    """
    shape = (c.shape[0], -1, size) if size else (c.shape[0], groups, -1)
    cg, rg = c.reshape(shape), r.reshape(shape)  # (B, G, n)
    n = cg.shape[-1]
    dc = cg - cg.mean(-1, keepdim=True)
    dr = rg * (1 - 2 / n) + rg.sum(-1, keepdim=True) / n
    lo, hi = dc - dr, dc + dr
    small = torch.where(lo > 0, lo, torch.where(hi < 0, -hi, torch.zeros_like(lo))) ** 2
    large = torch.maximum(lo * lo, hi * hi)
    var_lo, var_hi = small.mean(-1, keepdim=True), large.mean(-1, keepdim=True)
    big = (cg.abs() + rg).amax(-1, keepdim=True)
    ill = big * torch.rsqrt(var_lo + eps) > CONDITION
    allowance = torch.where(ill, 2 * FP32_EPS * (math.ceil(math.log2(n)) + 2), 0.0) * big  # (B, G, 1)
    s_lo = torch.rsqrt(var_hi + allowance * big + eps)  # the smallest scale: the largest variance
    s_hi = torch.rsqrt((var_lo - allowance * big).clamp_min(0) + eps)
    lo, hi = lo - allowance, hi + allowance
    y_lo, y_hi = torch.minimum(lo * s_lo, lo * s_hi), torch.maximum(hi * s_lo, hi * s_hi)
    return ((y_hi + y_lo) / 2).view_as(c), ((y_hi - y_lo) / 2).view_as(c)


def propagate(layers: list[nn.Module], center: torch.Tensor, radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Push a box (center, radius >= 0) through one-input ``layers``; returns a box that contains every output."""
    c, r = center, radius
    for m in layers:
        if isinstance(m, AFFINE) or (isinstance(m, nn.InstanceNorm2d) and m.track_running_stats):
            c, r = _affine_center(m, c), _affine_abs(m, r)
        elif isinstance(m, SELF_NORM):
            c, r = _self_norm(m, c, r)
        elif isinstance(m, (nn.MaxPool2d, *MONOTONE, *ORDER)):
            lo, hi = m(c - r), m(c + r)
            c, r = (hi + lo) / 2, (hi - lo) / 2
        elif isinstance(m, VALLEY):
            b_lo, b_hi, floor = valley(type(m), getattr(m, "approximate", "none"))
            reaches = (r > 0) & (c - r <= b_hi) & (c + r >= b_lo)  # before m: it may work in place
            ends = m(c - r), m(c + r)
            lo, hi = torch.minimum(*ends), torch.maximum(*ends)
            lo = torch.where(reaches, lo.clamp(max=floor), lo)  # a point box stays exact: the clean pass
            c, r = (hi + lo) / 2, (hi - lo) / 2
        elif isinstance(m, nn.Flatten):
            _off_batch("flatten", m.start_dim, c.ndim)
            c, r = m(c), m(r)
        elif is_normalize(m):  # written out: the module may normalise in place
            c, r = (c - _channel(m.mean, c)) / _channel(m.std, c), r / _channel(m.std, r).abs()
        elif isinstance(m, ChannelAffine):
            c, r = m(c), m.radius(r)
        # identities (dropout in eval) leave the box unchanged
    return c, r


def layer(m: nn.Module) -> Callable[[Box], Box]:
    """The rule of a one-input layer."""
    def rule(box: Box) -> Box:
        return Box(*propagate([m], box.center, box.radius))
    return rule


# ---- functional calls that are layers in disguise -------------------------------------------------

def _bind(names: tuple[str, ...], defaults: dict[str, Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    """Arguments after the input, by name (a tiny ``inspect.signature(...).bind`` for builtins)."""
    out = dict(defaults)
    out.update(zip(names, args))
    for k, v in kwargs.items():
        if k not in names:
            raise TypeError(k)
        out[k] = v
    return out


def _max_pool(a: dict) -> nn.Module:
    return nn.MaxPool2d(a["kernel_size"], a["stride"] or a["kernel_size"], a["padding"], a["dilation"],
                        ceil_mode=a["ceil_mode"], return_indices=a["return_indices"])


def _avg_pool(a: dict) -> nn.Module:
    return nn.AvgPool2d(a["kernel_size"], a["stride"] or a["kernel_size"], a["padding"], a["ceil_mode"],
                        a["count_include_pad"], a["divisor_override"])


def _dropout(a: dict) -> nn.Module | None:
    return nn.Identity() if not a["training"] else None  # dropout while training is random: no rule


def _clamp(a: dict) -> nn.Module | None:
    """``clamp(x, lo, hi)`` is ``hardtanh(x, lo, hi)``, ``clamp(x, min=0)`` is ``relu(x)``; number bounds only."""
    lo, hi = a["min"], a["max"]
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in (lo, hi)):
        return None
    if lo is not None and hi is not None:
        return nn.Hardtanh(float(lo), float(hi)) if lo < hi else None  # (hardtanh needs min < max)
    return nn.ReLU() if lo == 0 and hi is None else None


_POOL = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_POOL_DEFAULTS = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False}
_AVG = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
_AVG_DEFAULTS = {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True,
                 "divisor_override": None}
_DROP = ("p", "training", "inplace")
_DROP_DEFAULTS = {"p": 0.5, "training": True, "inplace": False}

# callable -> (argument names after the input, defaults, module factory)
_FUNCTIONAL: dict[Any, tuple[tuple[str, ...], dict, Callable[[dict], nn.Module | None]]] = {
    F.relu: (("inplace",), {"inplace": False}, lambda a: nn.ReLU()),
    torch.relu: ((), {}, lambda a: nn.ReLU()),
    F.relu6: (("inplace",), {"inplace": False}, lambda a: nn.ReLU6()),
    F.leaky_relu: (("negative_slope", "inplace"), {"negative_slope": 0.01, "inplace": False},
                   lambda a: nn.LeakyReLU(a["negative_slope"])),
    F.elu: (("alpha", "inplace"), {"alpha": 1.0, "inplace": False}, lambda a: nn.ELU(a["alpha"])),
    F.hardtanh: (("min_val", "max_val", "inplace"), {"min_val": -1.0, "max_val": 1.0, "inplace": False},
                 lambda a: nn.Hardtanh(a["min_val"], a["max_val"]) if a["min_val"] < a["max_val"] else None),
    F.softplus: (("beta", "threshold"), {"beta": 1.0, "threshold": 20.0},
                 lambda a: nn.Softplus(a["beta"], a["threshold"])),
    F.hardsigmoid: (("inplace",), {"inplace": False}, lambda a: nn.Hardsigmoid()),
    F.gelu: (("approximate",), {"approximate": "none"}, lambda a: nn.GELU(a["approximate"])),
    F.silu: (("inplace",), {"inplace": False}, lambda a: nn.SiLU()),
    F.hardswish: (("inplace",), {"inplace": False}, lambda a: nn.Hardswish()),
    F.mish: (("inplace",), {"inplace": False}, lambda a: nn.Mish()),
    torch.sigmoid: ((), {}, lambda a: nn.Sigmoid()),
    F.sigmoid: ((), {}, lambda a: nn.Sigmoid()),
    torch.tanh: ((), {}, lambda a: nn.Tanh()),
    F.tanh: ((), {}, lambda a: nn.Tanh()),
    F.max_pool2d: (_POOL, _POOL_DEFAULTS, _max_pool),
    torch.max_pool2d: (_POOL[:-1], {k: v for k, v in _POOL_DEFAULTS.items() if k != "return_indices"},
                       lambda a: _max_pool({**a, "return_indices": False})),
    F.avg_pool2d: (_AVG, _AVG_DEFAULTS, _avg_pool),
    F.adaptive_avg_pool2d: (("output_size",), {}, lambda a: nn.AdaptiveAvgPool2d(a["output_size"])),
    F.adaptive_max_pool2d: (("output_size", "return_indices"), {"return_indices": False},
                            lambda a: nn.AdaptiveMaxPool2d(a["output_size"], a["return_indices"])),
    F.pad: (("pad", "mode", "value"), {"mode": "constant", "value": None}, lambda a: OrderPreserving(F.pad, a)),
    F.interpolate: (("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias"),
                    {"size": None, "scale_factor": None, "mode": "nearest", "align_corners": None,
                     "recompute_scale_factor": None, "antialias": False},
                    lambda a: OrderPreserving(F.interpolate, a) if a["mode"] in RESIZE_MODES and not a["antialias"]
                    else None),
    F.dropout: (_DROP, _DROP_DEFAULTS, _dropout),
    F.dropout2d: (_DROP, _DROP_DEFAULTS, _dropout),
    torch.clamp: (("min", "max"), {"min": None, "max": None}, lambda a: _clamp(a)),
    torch.clip: (("min", "max"), {"min": None, "max": None}, lambda a: _clamp(a)),
    torch.flatten: (("start_dim", "end_dim"), {"start_dim": 0, "end_dim": -1},
                    lambda a: nn.Flatten(a["start_dim"], a["end_dim"]) if a["start_dim"] != 0 else None),
}
# tensor methods: x.relu(), x.flatten(1), ...
_METHODS: dict[str, Any] = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
                            "flatten": torch.flatten, "clamp": torch.clamp, "clip": torch.clip}


def layer_for_call(kind: str, target: Any, args: tuple, kwargs: dict) -> nn.Module | None:
    """The layer module equivalent to ``target(input, *args, **kwargs)`` (a function or a tensor method
    name), or None when there is none. ``args`` and ``kwargs`` are constants here."""
    fn = _METHODS.get(target) if kind == "call_method" else target
    try:
        spec = _FUNCTIONAL.get(fn)
    except TypeError:  # unhashable target
        return None
    if spec is None:
        return None
    names, defaults, make = spec
    try:
        m = make(_bind(names, defaults, args, kwargs))
    except (TypeError, KeyError, ValueError):
        return None
    return m if m is not None and supported_layer(m) is None else None


# ---- rules with several inputs or constants ---------------------------------------------------------

def _is_const(v: Any) -> bool:
    return isinstance(v, (int, float, torch.Tensor)) and not isinstance(v, bool)


def add(a: Any, b: Any) -> Box:
    if isinstance(a, Box) and isinstance(b, Box):
        return Box(a.center + b.center, a.radius + b.radius)
    box, k = (a, b) if isinstance(a, Box) else (b, a)
    return Box(box.center + k, box.radius + torch.zeros_like(k) if isinstance(k, torch.Tensor) else box.radius)


def sub(a: Any, b: Any) -> Box:
    if isinstance(a, Box) and isinstance(b, Box):
        return Box(a.center - b.center, a.radius + b.radius)
    if isinstance(a, Box):
        return add(a, -b)
    return add(neg(b), a)


def neg(a: Box) -> Box:
    return Box(-a.center, a.radius)


def mul(a: Any, b: Any) -> Box:
    """A box times a constant (a number or a tensor that broadcasts); a box times a box is :func:`mul_boxes`."""
    box, k = (a, b) if isinstance(a, Box) else (b, a)
    return Box(box.center * k, box.radius * abs(k))


def mul_boxes(a: Box, b: Box) -> Box:
    """A box times a box (a squeeze-and-excitation gate times its features): the product is bilinear, so its
    extremes over the two boxes are among the four products of their ends."""
    ends = [x * y for x in (a.center - a.radius, a.center + a.radius) for y in (b.center - b.radius, b.center + b.radius)]
    return Box.spanning(torch.minimum(torch.minimum(ends[0], ends[1]), torch.minimum(ends[2], ends[3])),
                        torch.maximum(torch.maximum(ends[0], ends[1]), torch.maximum(ends[2], ends[3])))


def div(a: Box, k: Any) -> Box:
    return Box(a.center / k, a.radius / abs(k))


def cat(boxes: list[Box], dim: int = 0) -> Box:
    _off_batch("cat", dim, boxes[0].center.ndim)
    return Box(torch.cat([b.center for b in boxes], dim), torch.cat([b.radius for b in boxes], dim))


#: The arguments of a reshaping method that name dims, in order.
_DIM_ARGS = {"transpose": ("dim0", "dim1"), "squeeze": ("dim",), "unsqueeze": ("dim",), "flatten": ("start_dim",),
             "unfold": ("dimension",)}


def _keeps_batch_dim(method: str, ndim: int, args: tuple, kwargs: dict) -> None:
    """Raise :class:`BatchDimError` when ``x.<method>(*args, **kwargs)`` of an ``ndim``-d box would move, drop
    or split its batch dim: the rules after it take dim 0 for the batch."""
    if method == "permute":
        dims = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args or kwargs.get("dims", ())
        if dims and isinstance(dims[0], int) and dims[0] % ndim != 0:
            raise BatchDimError(f"permute{tuple(dims)} of a {ndim}-d tensor moves the batch dim (one row per box)")
        return
    names = _DIM_ARGS.get(method)
    if names is None:
        return
    dims = {**dict(zip(names, args)), **{k: v for k, v in kwargs.items() if k in names}}
    if method == "squeeze" and "dim" not in dims:
        raise BatchDimError("squeeze without a dim drops the batch dim of a single box")
    if method == "flatten":
        dims.setdefault("start_dim", 0)
    flat = [d for v in dims.values() for d in (v if isinstance(v, (tuple, list)) else (v,))]
    _off_batch(method, flat, ndim + 1 if method == "unsqueeze" else ndim)


def reshape(method: str) -> Callable[..., Box]:
    """``view``/``reshape``/``contiguous``/... applied to center and radius alike; those that take dims keep
    the batch dim where it is (:func:`_keeps_batch_dim`)."""
    def rule(box: Box, *args: Any, **kwargs: Any) -> Box:
        _keeps_batch_dim(method, box.center.ndim, args, kwargs)
        return Box(getattr(box.center, method)(*args, **kwargs), getattr(box.radius, method)(*args, **kwargs))
    return rule


def identity(box: Box, *args: Any, **kwargs: Any) -> Box:
    """A call that returns its input unchanged (stochastic depth in eval mode)."""
    return box


def pieces(method: str) -> Callable[..., tuple[Box, ...]]:
    """``chunk``/``split``/``unbind`` along a dim other than the batch: views of center and radius alike, as a
    tuple the graph lets a model index with plain integers."""
    def rule(box: Box, *args: Any, **kwargs: Any) -> tuple[Box, ...]:
        at = 0 if method == "unbind" else 1
        _off_batch(method, args[at] if len(args) > at else kwargs.get("dim", 0), box.center.ndim)
        parts = zip(getattr(box.center, method)(*args, **kwargs), getattr(box.radius, method)(*args, **kwargs))
        return tuple(Box(c, r) for c, r in parts)
    rule.parts = True  # the graph lets a model read single pieces only
    return rule


def element(parts: tuple[Box, ...], index: int) -> Box:
    """``parts[i]`` of :func:`pieces`' result, or the values (``index`` 0) of :func:`order_select`'s."""
    return parts[index]


def size(box: Box, *args: Any) -> Any:
    """``x.size(...)``: a plain value, read off the center (its batch dimension is the boxes')."""
    return box.center.size(*args)


def attribute(box: Box, name: str) -> Any:
    """``x.shape`` and the like: a plain value read off the center."""
    return getattr(box.center, name)


def batch_norm(box: Box, running_mean: torch.Tensor, running_var: torch.Tensor, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> Box:
    """``F.batch_norm`` with eval statistics: a per-channel affine map."""
    scale = (weight if weight is not None else torch.ones_like(running_var)) / torch.sqrt(running_var + eps)
    shape = (1, -1) + (1,) * (box.center.ndim - 2)
    return Box(F.batch_norm(box.center, running_mean, running_var, weight, bias, False, 0.0, eps),
               box.radius * scale.abs().view(shape))


def linear(box: Box, weight: torch.Tensor, bias: torch.Tensor | None = None) -> Box:
    return Box(F.linear(box.center, weight, bias), F.linear(box.radius, weight.abs()))


def conv2d(box: Box, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Box:
    return Box(F.conv2d(box.center, weight, bias, stride, padding, dilation, groups),
               F.conv2d(box.radius, weight.abs(), None, stride, padding, dilation, groups))


def conv_transpose2d(box: Box, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: Any = 1,
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Box:
    return Box(F.conv_transpose2d(box.center, weight, bias, stride, padding, output_padding, groups, dilation),
               F.conv_transpose2d(box.radius, weight.abs(), None, stride, padding, output_padding, groups, dilation))


def layer_norm(box: Box, normalized_shape: Any, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5) -> Box:
    """``F.layer_norm``: the layer's normalisation, then the elementwise weight and bias."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    _off_batch("layer norm", -len(shape), box.center.ndim)
    return Box(*_scaled(*_normalised(box.center, box.radius, math.prod(shape), None, eps), weight, bias, shape))


def group_norm(box: Box, num_groups: int, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               eps: float = 1e-5) -> Box:
    """``F.group_norm``: the layer's normalisation, then the per-channel weight and bias."""
    shape = (1, -1) + (1,) * (box.center.ndim - 2)
    return Box(*_scaled(*_normalised(box.center, box.radius, None, num_groups, eps), weight, bias, shape))


def mean(box: Box, dim: Any = None, keepdim: bool = False) -> Box:
    """A mean over some dimensions: linear with non-negative weights."""
    _off_batch("mean", dim, box.center.ndim)
    return Box(box.center.mean(dim, keepdim), box.radius.mean(dim, keepdim))


def _ends(box: Box, fn: Callable[[torch.Tensor], torch.Tensor]) -> Box:
    """``fn`` of the box's two ends, for a map that is non-decreasing in every input: the box it gives."""
    return Box.spanning(fn(box.center - box.radius), fn(box.center + box.radius))


def order_reduce(method: str) -> Callable[..., Box]:
    """``amax``, ``amin`` or ``logsumexp`` over some dimensions: each is non-decreasing in every input."""
    def rule(box: Box, *args: Any, **kwargs: Any) -> Box:
        _off_batch(method, args[0] if args else kwargs.get("dim"), box.center.ndim)
        return _ends(box, lambda t: getattr(torch, method)(t, *args, **kwargs))
    return rule


def order_select(method: str) -> Callable[..., tuple[Box, None]]:
    """``max``, ``min``, ``median`` or ``sort`` along a dimension: each value is an order statistic, which
    is non-decreasing in every input.
    The result is a pair like torch's; the graph lets a model read only its values (the indices of an
    interval are not an interval)."""
    def rule(box: Box, *args: Any, **kwargs: Any) -> tuple[Box, None]:
        dim = args[0] if args else kwargs.get("dim", -1 if method == "sort" else None)
        _off_batch(method, dim, box.center.ndim)
        return _ends(box, lambda t: getattr(torch, method)(t, *args, **kwargs).values), None
    rule.pair = True  # the graph lets only the values be read
    return rule


def elementwise_extreme(method: str) -> Callable[[Any, Any], Box]:
    """``torch.maximum``/``minimum`` (and two-tensor ``max``/``min``) of boxes or a box and a constant."""
    def rule(a: Any, b: Any) -> Box:
        ends = [(x.center - x.radius, x.center + x.radius) if isinstance(x, Box) else (x, x) for x in (a, b)]
        fn = getattr(torch, method)
        return Box.spanning(fn(ends[0][0], ends[1][0]), fn(ends[0][1], ends[1][1]))
    return rule


def unfold(box: Box, *args: Any, **kwargs: Any) -> Box:
    """``F.unfold``: every output is one input or a zero of the padding, so center and radius go alike."""
    return Box(F.unfold(box.center, *args, **kwargs), F.unfold(box.radius, *args, **kwargs))


def getitem(box: Box, index: Any) -> Box:
    """``x[:, ...]``: basic indexing that keeps the batch dimension whole, a view of center and radius alike."""
    return Box(box.center[index], box.radius[index])


def _keeps_batch(index: Any) -> bool:
    """Whether ``x[index]`` is basic indexing (slices, integers, None, ...) that leaves dim 0 untouched."""
    parts = index if isinstance(index, tuple) else (index,)
    plain = lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool))  # noqa: E731
    basic = all(plain(p) or p is Ellipsis or (isinstance(p, slice) and all(map(plain, (p.start, p.stop, p.step))))
                for p in parts)
    return basic and (not parts or parts[0] == slice(None))  # (``x[()]`` is x itself)


def _dims_keep_batch(dim: Any) -> bool:
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    return all(isinstance(d, int) and d != 0 for d in dims)


_ARITH_FUNCTIONS = {operator.add: "add", torch.add: "add", operator.iadd: "add", operator.sub: "sub", torch.sub: "sub",
                    operator.isub: "sub", operator.mul: "mul", torch.mul: "mul", operator.imul: "mul",
                    operator.truediv: "div", torch.div: "div", operator.itruediv: "div"}
_ARITH_METHODS = {"add": "add", "add_": "add", "__add__": "add", "__radd__": "add", "sub": "sub", "sub_": "sub",
                  "mul": "mul", "mul_": "mul", "div": "div", "div_": "div"}


def arithmetic(kind: str, target: Any) -> str | None:
    """``add``, ``sub``, ``mul`` or ``div`` when the call (``kind`` an fx node's op) is that operation in
    any of its spellings (operator, ``torch.*``, tensor method, in place), else None."""
    if kind == "call_method":
        return _ARITH_METHODS.get(target)
    try:
        return _ARITH_FUNCTIONS.get(target)
    except TypeError:  # unhashable target
        return None


#: Reductions non-decreasing in every input, whose value is one tensor.
ORDER_REDUCE = ("amax", "amin", "logsumexp")
#: Selections along a dimension that return (values, indices); only the values have a rule.
ORDER_SELECT = ("max", "min", "median", "sort")


def _extreme(kind: str, target: Any, args: tuple) -> str | None:
    """``maximum`` or ``minimum`` when the call is the elementwise one of two tensors (``torch.max(a, b)``
    too, but not ``torch.max(x, dim)``), else None."""
    if kind == "call_method":
        name = target
    else:
        name = target.__name__ if target in (torch.maximum, torch.minimum, torch.max, torch.min) else None
    if name in ("maximum", "minimum"):
        return name
    if name in ("max", "min") and len(args) == 2 and not isinstance(args[1], int):
        return name + "imum"
    return None


def rule_for_call(kind: str, target: Any, args: tuple, kwargs: dict, is_box: Callable[[Any], bool]) -> Callable | None:
    """The rule of a call that is not a one-input layer, or None. ``args`` may hold earlier nodes;
    ``is_box(v)`` says whether an argument carries a box (depends on the pixel) or is a constant."""
    boxes = [is_box(a) for a in args]
    name = target if kind == "call_method" else None
    op = arithmetic(kind, target)
    if op == "add" and len(args) == 2 and not kwargs and (all(boxes) or boxes[0] or (boxes[1] and not name)):
        return add
    if op == "sub" and len(args) == 2 and not kwargs and (boxes[0] or not name):
        return sub
    if op == "mul" and len(args) == 2 and not kwargs and sum(boxes) == 1 and _is_const(args[1 - boxes.index(True)]):
        return mul
    if op == "mul" and len(args) == 2 and not kwargs and all(boxes):
        return mul_boxes
    if op == "div" and len(args) == 2 and not kwargs and boxes == [True, False] and _is_const(args[1]):
        return div
    if target in (operator.neg, torch.neg) or name == "neg":
        return neg if boxes == [True] else None
    if target is torch.cat or target is torch.concat:
        parts = args[0] if args else kwargs.get("tensors")
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if isinstance(parts, (list, tuple)) and all(is_box(p) for p in parts) and _dims_keep_batch(dim):
            return cat
        return None
    if name in ("view", "reshape", "contiguous", "flatten", "squeeze", "unsqueeze", "permute", "transpose"):
        return reshape(name) if boxes and boxes[0] else None
    if getattr(target, "__name__", None) == "stochastic_depth" and "torchvision" in getattr(target, "__module__", ""):
        training = args[3] if len(args) > 3 else kwargs.get("training", True)
        return identity if boxes[0] and not any(boxes[1:]) and training is False else None  # eval: the input
    if name in ("chunk", "split", "tensor_split", "unbind") or target in (torch.chunk, torch.split, torch.unbind):
        dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
        if name == "unbind" or target is torch.unbind:
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        ok = boxes[0] and not any(boxes[1:]) and isinstance(dim, int) and _dims_keep_batch(dim)
        return pieces(name or target.__name__) if ok else None
    if target in (torch.transpose, torch.permute, torch.squeeze, torch.unsqueeze):  # ShuffleNet's channel shuffle
        return reshape(target.__name__) if boxes and boxes[0] and not any(boxes[1:]) else None
    if target is torch.reshape:
        return (lambda box, shape: reshape("reshape")(box, shape)) if boxes and boxes[0] else None
    if name == "size":
        return size
    if target is F.batch_norm:
        training = args[5] if len(args) > 5 else kwargs.get("training", False)
        return batch_norm if boxes[0] and not any(boxes[1:]) and training is False else None
    if target is F.linear:
        return linear if boxes[0] and not any(boxes[1:]) else None
    if target is F.conv2d:
        pad = args[4] if len(args) > 4 else kwargs.get("padding", 0)
        return conv2d if boxes[0] and not any(boxes[1:]) and not isinstance(pad, str) else None
    if target in (F.conv_transpose2d, F.layer_norm, F.group_norm):  # a box, then constants (weights, sizes)
        rule = {F.conv_transpose2d: conv_transpose2d, F.layer_norm: layer_norm, F.group_norm: group_norm}[target]
        return rule if boxes[0] and not any(boxes[1:]) and not any(map(is_box, kwargs.values())) else None
    if name in ORDER_REDUCE or target in (torch.amax, torch.amin, torch.logsumexp):
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        return order_reduce(name or target.__name__) if boxes[0] and dim is not None and _dims_keep_batch(dim) \
            and not any(boxes[1:]) else None
    extreme = _extreme(kind, target, args)
    if extreme is not None:
        ok = len(args) == 2 and not kwargs and all(b or _is_const(a) for a, b in zip(args, boxes))
        return elementwise_extreme(extreme) if ok else None
    if name in ORDER_SELECT or target in (torch.max, torch.min, torch.median, torch.sort):
        dim = args[1] if len(args) > 1 else kwargs.get("dim", -1 if (name or target.__name__) == "sort" else None)
        flag = args[2] if len(args) > 2 else kwargs.get("keepdim", kwargs.get("descending", False))
        ok = boxes[0] and not any(boxes[1:]) and isinstance(dim, int) and _dims_keep_batch(dim) \
            and isinstance(flag, bool) and set(kwargs) <= {"dim", "keepdim", "descending"}
        return order_select(name or target.__name__) if ok else None
    if name == "unfold":  # Tensor.unfold(dim, size, step): a view
        dim = args[1] if len(args) > 1 else kwargs.get("dimension")
        return reshape(name) if boxes[0] and isinstance(dim, int) and dim != 0 else None
    if target is F.unfold:
        return unfold if boxes[0] and not any(boxes[1:]) and not any(map(is_box, kwargs.values())) else None
    if target is operator.getitem:
        return getitem if boxes == [True, False] and _keeps_batch(args[1]) else None
    if target is torch.mean or name == "mean":
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        return mean if boxes[0] and dim is not None and _dims_keep_batch(dim) else None
    return None
