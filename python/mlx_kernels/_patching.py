"""``patch`` / ``unpatch``: run an existing mlx / mlx-lm model on mlx_kernels ops.

How the swap is done, and why
-----------------------------
*Quantized layers.* :class:`mlx_kernels.nn.QuantizedLinear` and
:class:`mlx_kernels.nn.QuantizedEmbedding` are subclasses of the MLX layers
that add no state, so :func:`patch` changes the class of each eligible layer
object in place (``layer.__class__``). Nothing is copied or re-quantized, the
layer keeps its identity (references held elsewhere, optimizer state,
``parameters()``, ``load_weights`` all see the same object), and
:func:`unpatch` changes the class back: exactly what was there.

*Attention* (``attention=True``). mlx-lm attention modules call the function
``scaled_dot_product_attention`` of ``mlx_lm.models.base``, imported by name
into each model's module (``from .base import scaled_dot_product_attention``),
which calls ``mx.fast.scaled_dot_product_attention``. Replacing that name in
the module would switch *every* model of that architecture in the process,
patched or not. Instead:

1. the name in the module is replaced by a dispatcher (installed once per
   module, reference-counted, removed when the last patched model of that
   module is unpatched) that calls the original function unless a patched
   attention module is running;
2. each attention module of the patched model gets a subclass of its class
   whose ``__call__`` marks "flash attention on" (a context variable) for the
   duration of the original ``__call__``.

So only the patched model's attention goes through
:func:`mlx_kernels.flash_attention`, and unpatching restores both the classes
and the module name.

No silent fallback: calls the op cannot run (a quantized KV cache, attention
sinks) raise ``NotImplementedError`` instead of quietly calling MLX, and
modules known to be unsupported at patch time (head dims the kernel lacks,
sinks, direct ``mx.fast`` calls) are left unpatched with the reason in the
report.
"""

from __future__ import annotations

import contextvars
import dataclasses
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

import mlx.core as mx
import mlx.nn as _mnn

from . import nn as _knn

__all__ = ["PatchReport", "patch", "unpatch"]

_ATTN_NAME = "scaled_dot_product_attention"
_FLASH_HEAD_DIMS = (64, 80, 96, 128, 256)
_STATE_ATTR = "_mlx_kernels_patch_state"
_LOCK = threading.Lock()

# True while the __call__ of a patched attention module runs.
_FLASH_ON: contextvars.ContextVar[bool] = contextvars.ContextVar("mlx_kernels_flash", default=False)


@dataclasses.dataclass
class PatchReport:
    """What :func:`patch` did to a model.

    Attributes:
        swapped: paths (``model.named_modules()`` names) of the layers now run
            by mlx_kernels (``QuantizedLinear``, and ``QuantizedEmbedding``
            used as the tied output projection).
        skipped: ``(path, reason)`` for each quantized layer left as it was.
        already: paths of layers an earlier :func:`patch` call had swapped.
        attention: paths of the attention modules now run by
            :func:`mlx_kernels.flash_attention` (``attention=True``).
        attention_skipped: ``(path, reason)`` for attention modules left as
            they were (``attention=True``).
        attention_requested: whether ``attention=True`` was passed.
    """

    swapped: List[str] = dataclasses.field(default_factory=list)
    skipped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    already: List[str] = dataclasses.field(default_factory=list)
    attention: List[str] = dataclasses.field(default_factory=list)
    attention_skipped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    attention_requested: bool = False

    @property
    def num_swapped(self) -> int:
        return len(self.swapped)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def __str__(self) -> str:
        lines = [
            f"mlx_kernels.patch: {len(self.swapped)} quantized layer(s) swapped, "
            f"{len(self.skipped)} skipped"
            + (f", {len(self.already)} already patched" if self.already else "")
        ]
        kinds: Dict[str, int] = {}
        for path in self.swapped:
            leaf = path.rsplit(".", 1)[-1]
            kinds[leaf] = kinds.get(leaf, 0) + 1
        if kinds:
            lines.append("  swapped: " + ", ".join(f"{k} x{n}" for k, n in kinds.items()))
        lines += _grouped("  skipped", self.skipped)
        if self.attention_requested:
            lines.append(
                f"  attention: {len(self.attention)} module(s) routed to flash_attention, "
                f"{len(self.attention_skipped)} left on MLX"
            )
            lines += _grouped("  attention skipped", self.attention_skipped)
        return "\n".join(lines)


def _grouped(title: str, items: List[Tuple[str, str]]) -> List[str]:
    by_reason: Dict[str, List[str]] = {}
    for path, reason in items:
        by_reason.setdefault(reason, []).append(path)
    out = []
    for reason, paths in by_reason.items():
        shown = ", ".join(paths[:4]) + (f", ... ({len(paths)} in all)" if len(paths) > 4 else "")
        out.append(f"{title}: {reason}: {shown}")
    return out


@dataclasses.dataclass
class _State:
    # (path, module object, original class)
    layers: List[Tuple[str, _mnn.Module, type]] = dataclasses.field(default_factory=list)
    attention: List[Tuple[str, _mnn.Module, type]] = dataclasses.field(default_factory=list)
    namespaces: List[dict] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------------------
# Attention: the per-module dispatcher and the per-class marking subclasses.


class _Dispatcher:
    """Stands in for ``scaled_dot_product_attention`` in one model module."""

    def __init__(self, original: Callable):
        self.original = original
        self.users = 0
        self.__wrapped__ = original
        self.__name__ = getattr(original, "__name__", _ATTN_NAME)
        self.__doc__ = getattr(original, "__doc__", None)

    def __call__(self, queries, keys, values, cache=None, scale=None, mask=None, sinks=None, **kw):
        if not _FLASH_ON.get():
            if sinks is not None:
                kw["sinks"] = sinks
            return self.original(queries, keys, values, cache=cache, scale=scale, mask=mask, **kw)
        return _flash_sdpa(queries, keys, values, cache, scale, mask, sinks, kw)


def _flash_sdpa(queries, keys, values, cache, scale, mask, sinks, extra):
    from . import flash_attention

    if extra:
        raise NotImplementedError(
            f"mlx_kernels.patch(attention=True): scaled_dot_product_attention was called "
            f"with arguments flash_attention does not take: {sorted(extra)}"
        )
    if sinks is not None:
        raise NotImplementedError(
            "mlx_kernels.patch(attention=True): this call passes attention sinks, which "
            "flash_attention does not support; unpatch the model (mlx_kernels.unpatch) or "
            "patch it with attention=False"
        )
    if cache is not None and hasattr(cache, "bits"):
        raise NotImplementedError(
            "mlx_kernels.patch(attention=True): the KV cache is quantized "
            f"({type(cache).__name__}, {cache.bits} bits); flash_attention takes float "
            "keys and values. Use a float KV cache or patch with attention=False"
        )
    if scale is None:
        scale = queries.shape[-1] ** -0.5
    return flash_attention(queries, keys, values, scale=float(scale), mask=mask)


_MARKED: Dict[type, type] = {}


def _marked_class(cls: type) -> type:
    """A subclass of ``cls`` whose ``__call__`` turns flash attention on."""
    with _LOCK:
        sub = _MARKED.get(cls)
        if sub is None:

            def __call__(self, *args, **kwargs):
                token = _FLASH_ON.set(True)
                try:
                    return cls.__call__(self, *args, **kwargs)
                finally:
                    _FLASH_ON.reset(token)

            sub = type(
                cls.__name__,
                (cls,),
                {
                    "__call__": __call__,
                    "__module__": cls.__module__,
                    "__qualname__": cls.__qualname__,
                    "__doc__": cls.__doc__,
                    "_mlx_kernels_flash_base": cls,
                },
            )
            _MARKED[cls] = sub
        return sub


def _attention_candidate(module: _mnn.Module) -> Optional[Tuple[Optional[dict], Optional[str]]]:
    """(namespace to hook, reason it cannot be) for attention modules; None otherwise."""
    call = getattr(type(module), "__call__", None)
    code = getattr(call, "__code__", None)
    if code is None or _ATTN_NAME not in code.co_names:
        return None
    ns = call.__globals__
    target = ns.get(_ATTN_NAME)
    if target is None:
        return None, "calls mx.fast.scaled_dot_product_attention directly (no hook)"
    if not isinstance(target, _Dispatcher) and not _is_mlx_lm_sdpa(target):
        return None, (
            f"{type(module).__module__}.{_ATTN_NAME} is not mlx_lm.models.base's "
            "(unknown function, not hooked)"
        )
    if "sinks" in code.co_names:
        return None, "uses attention sinks (flash_attention has none)"
    head_dim = _head_dim(module)
    if head_dim is not None and head_dim not in _FLASH_HEAD_DIMS:
        return None, f"head_dim={head_dim} (flash_attention supports {list(_FLASH_HEAD_DIMS)})"
    return ns, None


def _is_mlx_lm_sdpa(fn: Any) -> bool:
    try:
        from mlx_lm.models import base
    except ImportError:
        return False
    return fn is base.scaled_dot_product_attention


def _head_dim(module: _mnn.Module) -> Optional[int]:
    hd = module.__dict__.get("head_dim")
    if isinstance(hd, int):
        return hd
    n_heads = module.__dict__.get("n_heads") or module.__dict__.get("num_heads")
    q = module.get("q_proj") if isinstance(module, dict) else None
    if isinstance(n_heads, int) and n_heads > 0 and q is not None and "weight" in q:
        return q["weight"].shape[0] // n_heads
    return None


def _install_dispatcher(ns: dict) -> None:
    with _LOCK:
        cur = ns[_ATTN_NAME]
        if not isinstance(cur, _Dispatcher):
            cur = _Dispatcher(cur)
            ns[_ATTN_NAME] = cur
        cur.users += 1


def _release_dispatcher(ns: dict) -> None:
    with _LOCK:
        cur = ns.get(_ATTN_NAME)
        if not isinstance(cur, _Dispatcher):
            return  # someone replaced it after us: leave theirs alone
        cur.users -= 1
        if cur.users <= 0:
            ns[_ATTN_NAME] = cur.original


# ---------------------------------------------------------------------------


def _quantized_kind(module: _mnn.Module) -> Optional[str]:
    if isinstance(module, (_knn.QuantizedLinear, _knn.QuantizedEmbedding)):
        return "ours"
    if type(module) is _mnn.QuantizedLinear:
        return "linear"
    if type(module) is _mnn.QuantizedEmbedding:
        return "embedding"
    if isinstance(module, (_mnn.QuantizedLinear, _mnn.QuantizedEmbedding)):
        return "subclass"
    name = type(module).__name__
    if "Quantized" in name or (isinstance(module, dict) and "scales" in module):
        return "other"
    return None


def patch(model: _mnn.Module, *, attention: bool = False) -> PatchReport:
    """Run a model's quantized layers (and optionally attention) on mlx_kernels, in place.

    Every ``mlx.nn.QuantizedLinear`` whose quantization mlx_kernels supports
    (mode ``"affine"``, 4 or 8 bits, group size 32, 64 or 128) becomes a
    :class:`mlx_kernels.nn.QuantizedLinear`, and every such
    ``mlx.nn.QuantizedEmbedding`` a :class:`mlx_kernels.nn.QuantizedEmbedding`
    (its ``as_linear``, the tied output projection, runs our kernel). The
    layer objects stay the same objects with the same arrays: only their class
    changes, so nothing is copied.

    Args:
        model: an ``mlx.nn.Module`` (e.g. an mlx-lm model).
        attention: also route the model's attention through
            :func:`mlx_kernels.flash_attention`: attention modules that call
            mlx-lm's ``scaled_dot_product_attention`` (``mlx_lm.models.base``),
            with a head dimension the kernel supports and no attention sinks.
            Only this model is affected, not other models of the same
            architecture. At run time, a call with a quantized KV cache or
            sinks raises ``NotImplementedError`` (no silent fallback to MLX).

    Returns:
        A :class:`PatchReport`; ``print(report)`` lists what was swapped and
        what was skipped and why. Calling ``patch`` again on a patched model
        swaps what is left and reports the rest as already patched.

    Raises:
        TypeError: ``model`` is not an ``mlx.nn.Module``.
    """
    if not isinstance(model, _mnn.Module):
        raise TypeError(
            f"mlx_kernels.patch expects an mlx.nn.Module; got {type(model).__qualname__}"
        )
    state: _State = model.__dict__.get(_STATE_ATTR) or _State()
    report = PatchReport(attention_requested=attention)

    for path, module in model.named_modules():
        path = path or "<root>"
        kind = _quantized_kind(module)
        if kind is None:
            pass
        elif kind == "ours":
            report.already.append(path)
        elif kind in ("linear", "embedding"):
            why = _knn.unsupported_reason(module.mode, module.group_size, module.bits)
            if why is None and module.get("biases") is None:
                why = "no biases (affine layers have them)"
            if why is not None:
                report.skipped.append((path, why))
            else:
                orig = type(module)
                module.__class__ = (
                    _knn.QuantizedLinear if kind == "linear" else _knn.QuantizedEmbedding
                )
                state.layers.append((path, module, orig))
                report.swapped.append(path)
        elif kind == "subclass":
            report.skipped.append(
                (path, f"{type(module).__qualname__} is a subclass of an mlx.nn quantized "
                       "layer with its own behaviour (not swapped)")
            )
        else:
            report.skipped.append(
                (path, f"{type(module).__qualname__} is not an mlx.nn.QuantizedLinear "
                       "(no mlx_kernels equivalent)")
            )

        if attention:
            if getattr(type(module), "_mlx_kernels_flash_base", None) is not None:
                report.attention.append(path)
                continue
            cand = _attention_candidate(module)
            if cand is None:
                continue
            ns, why = cand
            if why is not None:
                report.attention_skipped.append((path, why))
                continue
            orig = type(module)
            _install_dispatcher(ns)
            module.__class__ = _marked_class(orig)
            state.attention.append((path, module, orig))
            state.namespaces.append(ns)
            report.attention.append(path)

    for items in (report.swapped, report.already, report.attention):
        items.sort(key=_natural)
    for items in (report.skipped, report.attention_skipped):
        items.sort(key=lambda item: _natural(item[0]))
    if attention and not report.attention and not report.attention_skipped:
        report.attention_skipped.append(
            ("<model>", f"no module calls mlx_lm.models.base.{_ATTN_NAME}")
        )
    if state.layers or state.attention:
        object.__setattr__(model, _STATE_ATTR, state)
    return report


def _natural(path: str) -> list:
    """Sort key: "layers.10" after "layers.9"."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.split(".")]


def unpatch(model: _mnn.Module) -> int:
    """Undo :func:`patch`: every swapped layer and attention module gets its
    original class back, and hooked module names their original function.

    Returns:
        How many modules were restored (0 if the model was not patched).
    """
    state: Optional[_State] = model.__dict__.pop(_STATE_ATTR, None)
    if state is None:
        return 0
    for _, module, orig in state.layers:
        module.__class__ = orig
    for _, module, orig in state.attention:
        module.__class__ = orig
    for ns in state.namespaces:
        _release_dispatcher(ns)
    return len(state.layers) + len(state.attention)
