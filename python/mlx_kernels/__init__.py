"""Hand-written kernels for MLX.

``import mlx_kernels`` next to ``mlx.core`` and call its ops where you would
call MLX's built-ins:

* :func:`quantized_matmul` mirrors ``mx.quantized_matmul`` (affine mode).

On machines without an Apple GPU, :func:`metal_simulator` runs the package's
Metal kernels on the CPU (see docs/metal-simulator.md).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Union

import mlx.core as mx  # must be imported before the extension: it registers MLX's types

from . import _ext

__all__ = [
    "quantized_matmul",
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
