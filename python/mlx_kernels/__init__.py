"""Hand-written kernels for MLX.

``import mlx_kernels`` next to ``mlx.core`` and call its ops where you would
call MLX's built-ins:

* :func:`quantized_matmul` mirrors ``mx.quantized_matmul`` (affine mode).
* :func:`flash_attention` mirrors ``mx.fast.scaled_dot_product_attention``.
* :mod:`mlx_kernels.nn`: ``QuantizedLinear`` (and ``QuantizedEmbedding``),
  drop-ins for the ``mlx.nn`` layers that run on these ops.
* :func:`patch` / :func:`unpatch`: swap them into an existing mlx or mlx-lm
  model in place (and, with ``attention=True``, its attention), and back.

On machines without an Apple GPU, :func:`metal_simulator` runs the package's
Metal kernels on the CPU (see docs/metal-simulator.md).
"""

from __future__ import annotations

import contextlib
import numbers
from typing import Iterator, Optional, Union

import mlx.core as mx  # must be imported before the extension: it registers MLX's types

from . import _ext

__all__ = [
    "quantized_matmul",
    "flash_attention",
    "nn",
    "patch",
    "unpatch",
    "PatchReport",
    "metal_simulator",
    "metal_simulator_available",
    "__version__",
]
__version__ = "0.1.0"

StreamOrDevice = Union[None, mx.Stream, mx.Device]


def quantized_matmul(
    x: mx.array,
    w: mx.array,
    scales: mx.array,
    biases: Optional[mx.array],
    transpose: bool = True,
    group_size: int = 64,
    bits: int = 4,
    *,
    stream: StreamOrDevice = None,
) -> mx.array:
    """Multiply ``x`` by an affine-quantized matrix, as ``mx.quantized_matmul``.

    ``w``, ``scales`` and ``biases`` are the outputs of
    ``mx.quantize(W, group_size, bits)`` (mode ``"affine"``): ``w`` packs
    ``32 // bits`` values per ``uint32`` along its last axis, and every
    ``group_size`` consecutive values share one scale and one bias.

    Args:
        x: Input of shape ``(..., K)``, float32, float16 or bfloat16.
        w: Packed weights, ``uint32``: ``(N, K * bits // 32)`` when
            ``transpose`` is true, ``(K, N * bits // 32)`` otherwise.
        scales: Per-group scales: ``(N, K // group_size)`` when ``transpose``
            is true, ``(K, N // group_size)`` otherwise.
        biases: Per-group biases, the shape and dtype of ``scales``.
        transpose: Compute ``x @ W.T`` (true, the layout of ``nn.Linear``) or
            ``x @ W`` (false).
        group_size: 32, 64 or 128.
        bits: 4 or 8.
        stream: Stream or device to run on. Defaults to the default stream.

    Returns:
        An array of shape ``(..., N)`` whose dtype is the result type of
        ``x`` and ``scales`` (as ``mx.quantized_matmul``).

    Raises:
        TypeError: an argument has the wrong dtype (``w`` must be ``uint32``;
            ``x``, ``scales`` and ``biases`` floating point).
        ValueError: shapes that do not fit together, or unsupported ``bits``
            or ``group_size``.
        NotImplementedError: the stream's backend has no kernel in this build.
    """
    _check_arrays(x=x, w=w, scales=scales)
    if biases is not None:
        _check_arrays(biases=biases)
    return _ext.quantized_matmul(
        x, w, scales, biases, transpose, group_size, bits, stream=stream
    )


def flash_attention(
    q: mx.array,
    k: mx.array,
    v: mx.array,
    *,
    scale: float,
    mask: Union[None, str, mx.array] = None,
    stream: StreamOrDevice = None,
) -> mx.array:
    """Attention ``softmax(scale * q @ k.T + mask) @ v``, as
    ``mx.fast.scaled_dot_product_attention``.

    Heads are grouped as in grouped-query and multi-query attention: query
    head ``h`` attends with key/value head ``h // (Hq // Hkv)``; ``k`` and
    ``v`` are not repeated. The softmax is computed in float32 whatever the
    input dtype, with float32 accumulation throughout (a tiled, online
    softmax: no ``qL x kL`` score matrix is ever stored).

    Args:
        q: Queries ``[B, Hq, qL, D]``.
        k: Keys ``[B, Hkv, kL, D]``; ``Hq`` must be a multiple of ``Hkv``.
        v: Values ``[B, Hkv, kL, D]``.
        scale: Multiplies the scores ``q @ k.T`` (typically ``D ** -0.5``).
        mask: One of

            * ``None``: every query attends every key;
            * ``"causal"``: aligned bottom-right as in MLX, so query ``i``
              attends keys ``j <= i + kL - qL``;
            * a boolean array (``True`` = attend), broadcastable to
              ``[B, Hq, qL, kL]`` (at most 4 dimensions, aligned on the
              right);
            * an additive array, added to the scaled scores, broadcastable
              likewise, whose dtype promotes to the dtype of ``q`` (as MLX:
              a float32 mask is refused for float16 ``q``; integer masks are
              accepted).

        stream: Stream or device to run on. Defaults to the default stream.

    Returns:
        ``[B, Hq, qL, D]``, the dtype of ``q``.

    Fully masked rows behave as in MLX: a row whose keys are all masked by a
    boolean mask, and a row with no visible key under ``"causal"`` (when
    ``qL > kL``), get uniform weights, i.e. the mean of ``v`` over all keys
    (MLX fills masked scores with the lowest finite value, not ``-inf``); a
    row on which an additive mask is ``-inf`` everywhere is NaN. With
    ``kL == 0`` the output is zeros.

    Differences from MLX: ``q``, ``k`` and ``v`` must share one dtype
    (float32, float16 or bfloat16; MLX promotes mixed dtypes and accepts
    float64), ``k`` and ``v`` must have the head dimension of ``q``, and
    ``D`` must be 64, 80, 96, 128 or 256. There are no attention sinks.

    Transforms: ``mx.grad``/``mx.vjp`` and ``mx.jvp`` (through the reference
    decomposition in float32, which does hold ``qL x kL`` matrices), ``mx.vmap``
    over any axis of any input, ``mx.compile``; ``mx.compile(shapeless=True)``
    without a mask or with ``"causal"`` (with an array mask the broadcast to
    ``[B, Hq, qL, kL]`` is traced at fixed shape, so a new shape raises).

    Raises:
        TypeError: a non-array input, non-float or mixed dtypes, a mask of a
            dtype that neither is boolean nor promotes to ``q``'s, a ``scale``
            that is not a real number, or a mask that is neither ``None``, a
            string nor an array.
        ValueError: inputs not 4-D; batch, head-count, length or head-dim
            mismatches; ``Hq`` not a multiple of ``Hkv``; unsupported ``D``;
            a mask that cannot broadcast; an unknown mask string.
        NotImplementedError: the stream's backend has no kernel in this build.
    """
    _check_arrays(q=q, k=k, v=v)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(
            f"flash_attention: scale must be a real number; got "
            f"{type(scale).__module__}.{type(scale).__qualname__}."
        )
    if mask is None:
        mask_mode, mask_arr = "", None
    elif isinstance(mask, str):
        mask_mode, mask_arr = mask, None
        if mask_mode in ("", "array"):
            raise ValueError(
                f"flash_attention: unknown mask {mask!r}; mask must be None, "
                '"causal", or a boolean or additive array.'
            )
    elif isinstance(mask, mx.array):
        mask_mode, mask_arr = "array", mask
    else:
        raise TypeError(
            "flash_attention: mask must be None, \"causal\" or an "
            f"mlx.core.array; got {type(mask).__module__}.{type(mask).__qualname__}."
        )
    return _ext.flash_attention(
        q, k, v, scale=float(scale), mask_mode=mask_mode, mask=mask_arr, stream=stream
    )


def _check_arrays(**arrays):
    for name, value in arrays.items():
        if not isinstance(value, mx.array):
            raise TypeError(
                f"{name} must be an mlx.core.array; got {type(value).__module__}."
                f"{type(value).__qualname__} (convert it with mx.array)."
            )


def metal_simulator_available() -> bool:
    """Whether this build has the Metal simulator (Linux, built with clang >= 15)."""
    return _ext.metal_simulator_status()[0]


@contextlib.contextmanager
def metal_simulator(shuffle: bool = False, seed: int = 0) -> Iterator[None]:
    """Run the Metal kernels on the CPU stream through the Metal simulator.

    Ops called inside the block (on the CPU stream) evaluate by running this
    package's unmodified Metal shaders, through the same launch plans and host
    dispatch code as on a Mac, on a CPU model of a Metal GPU (threads as
    fibers, threadgroup memory, barriers and SIMD-group functions) that reports
    out-of-bounds accesses, divergent barriers and reads of unwritten
    threadgroup memory as errors. The choice is made when an op is called, so
    a result evaluated after the block still uses the simulator.

    Args:
        shuffle: resume threads in a random (seeded) order at every
            suspension, which turns a missing barrier into a wrong answer.
        seed: the seed of that order.

    Raises:
        NotImplementedError: (at the first op call) this build has no
            simulator; the message says why.
    """
    before = _ext.get_cpu_backend()
    _ext.set_cpu_backend(True, shuffle, seed)
    try:
        yield
    finally:
        _ext.set_cpu_backend(*before)


# After the ops: these modules call them.
from . import nn  # noqa: E402
from ._patching import PatchReport, patch, unpatch  # noqa: E402
