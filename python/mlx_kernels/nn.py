"""Drop-in ``mlx.nn`` layers whose matmuls run on :mod:`mlx_kernels` ops.

* :class:`QuantizedLinear`: ``mlx.nn.QuantizedLinear`` (affine, 4 or 8 bits,
  group size 32, 64 or 128) with its forward through
  :func:`mlx_kernels.quantized_matmul`.
* :class:`QuantizedEmbedding`: ``mlx.nn.QuantizedEmbedding`` whose
  :meth:`~QuantizedEmbedding.as_linear` (the output projection of models with
  tied embeddings) runs through :func:`mlx_kernels.quantized_matmul`; the
  lookup itself is MLX's.

Both are subclasses of the MLX layers and add no state: the same parameters
(``weight``, ``scales``, ``biases``, optional ``bias``), the same attributes
(``group_size``, ``bits``, ``mode``), the same constructors, ``from_linear`` /
``from_embedding``, ``load_weights`` / ``update`` and ``parameters()`` tree,
and ``isinstance(layer, mlx.nn.QuantizedLinear)`` is true. What differs: the
constructor refuses what :func:`mlx_kernels.quantized_matmul` has no kernel for
(modes other than ``"affine"``, ``bits`` other than 4 and 8, group sizes other
than 32, 64 and 128) with a ``ValueError`` instead of accepting it.

To swap the layers of an existing model without copying weights use
:func:`mlx_kernels.patch`.
"""

from __future__ import annotations

from typing import Optional

import mlx.core as mx
import mlx.nn as _mnn

from . import quantized_matmul

__all__ = ["QuantizedLinear", "QuantizedEmbedding", "SUPPORTED_BITS", "SUPPORTED_GROUP_SIZES"]

SUPPORTED_MODES = ("affine",)
SUPPORTED_BITS = (4, 8)
SUPPORTED_GROUP_SIZES = (32, 64, 128)


def unsupported_reason(mode: str, group_size: Optional[int], bits: Optional[int]) -> Optional[str]:
    """Why ``mlx_kernels`` cannot run a layer quantized this way, or ``None``.

    ``group_size`` / ``bits`` of ``None`` mean the defaults of the mode (as in
    ``mlx.nn``: 64 and 4 for ``"affine"``).
    """
    if mode not in SUPPORTED_MODES:
        return f"mode {mode!r} is not supported (only 'affine')"
    group_size = 64 if group_size is None else group_size
    bits = 4 if bits is None else bits
    if bits not in SUPPORTED_BITS:
        return f"bits={bits} is not supported (only 4 and 8)"
    if group_size not in SUPPORTED_GROUP_SIZES:
        return f"group_size={group_size} is not supported (only 32, 64 and 128)"
    return None


def _check_supported(cls_name: str, mode: str, group_size: Optional[int], bits: Optional[int]):
    why = unsupported_reason(mode, group_size, bits)
    if why is not None:
        raise ValueError(f"mlx_kernels.nn.{cls_name}: {why}.")


class QuantizedLinear(_mnn.QuantizedLinear):
    """``mlx.nn.QuantizedLinear`` with its matmul run by :func:`mlx_kernels.quantized_matmul`.

    Computes ``x @ dequantize(weight).T + bias`` exactly as the MLX layer does
    (same arguments, parameters, attributes and packed format; parameters are
    frozen, as in MLX).

    Args:
        input_dims: Input features; a multiple of ``group_size``.
        output_dims: Output features.
        bias: Whether the layer adds a (float32, zero-initialised) ``bias``.
        group_size: 32, 64 or 128 (default 64).
        bits: 4 or 8 (default 4).
        mode: Must be ``"affine"``.

    Raises:
        ValueError: an unsupported ``mode``, ``bits`` or ``group_size`` (the
            message names it and what is supported).
    """

    def __init__(
        self,
        input_dims: int,
        output_dims: int,
        bias: bool = True,
        group_size: Optional[int] = None,
        bits: Optional[int] = None,
        mode: str = "affine",
    ):
        _check_supported("QuantizedLinear", mode, group_size, bits)
        super().__init__(input_dims, output_dims, bias, group_size, bits, mode)

    def __call__(self, x: mx.array) -> mx.array:
        y = _project(self, x)
        if "bias" in self:
            y = y + self["bias"]
        return y

    @classmethod
    def from_linear(
        cls,
        linear_layer: _mnn.Module,
        group_size: Optional[int] = None,
        bits: Optional[int] = None,
        mode: str = "affine",
    ) -> "QuantizedLinear":
        """Quantize an ``mlx.nn.Linear`` layer (as ``mlx.nn.QuantizedLinear.from_linear``)."""
        _check_supported("QuantizedLinear", mode, group_size, bits)
        return super().from_linear(linear_layer, group_size, bits, mode)

    @classmethod
    def from_quantized(cls, layer: _mnn.QuantizedLinear) -> "QuantizedLinear":
        """A new layer sharing the arrays of an ``mlx.nn.QuantizedLinear`` (no copy)."""
        if not isinstance(layer, _mnn.QuantizedLinear):
            raise TypeError(
                f"from_quantized expects an mlx.nn.QuantizedLinear; got {type(layer).__qualname__}"
            )
        _check_supported("QuantizedLinear", layer.mode, layer.group_size, layer.bits)
        new = cls.__new__(cls)
        _copy_module_state(layer, new)
        return new


class QuantizedEmbedding(_mnn.QuantizedEmbedding):
    """``mlx.nn.QuantizedEmbedding`` whose :meth:`as_linear` runs :func:`mlx_kernels.quantized_matmul`.

    The lookup (``__call__``) is MLX's (a gather and a dequantize); only the
    tied output projection changes. Arguments as ``mlx.nn.QuantizedEmbedding``.

    Raises:
        ValueError: an unsupported ``mode``, ``bits`` or ``group_size``.
    """

    def __init__(
        self,
        num_embeddings: int,
        dims: int,
        group_size: Optional[int] = None,
        bits: Optional[int] = None,
        mode: str = "affine",
    ):
        _check_supported("QuantizedEmbedding", mode, group_size, bits)
        super().__init__(num_embeddings, dims, group_size, bits, mode)

    def as_linear(self, x: mx.array) -> mx.array:
        """``x @ dequantize(weight).T``: the embedding used as the output projection."""
        return _project(self, x)

    @classmethod
    def from_embedding(
        cls,
        embedding_layer: _mnn.Module,
        group_size: Optional[int] = None,
        bits: Optional[int] = None,
        mode: str = "affine",
    ) -> "QuantizedEmbedding":
        """Quantize an ``mlx.nn.Embedding`` (as ``mlx.nn.QuantizedEmbedding.from_embedding``)."""
        _check_supported("QuantizedEmbedding", mode, group_size, bits)
        return super().from_embedding(embedding_layer, group_size, bits, mode)


def _project(layer: _mnn.Module, x: mx.array) -> mx.array:
    """``x @ dequantize(layer.weight).T`` through :func:`quantized_matmul`."""
    return quantized_matmul(
        x,
        layer["weight"],
        layer["scales"],
        layer.get("biases"),
        transpose=True,
        group_size=layer.group_size,
        bits=layer.bits,
    )


def _copy_module_state(src: _mnn.Module, dst: _mnn.Module) -> None:
    """Make ``dst`` hold what ``src`` holds: its arrays (shared) and attributes."""
    dict.clear(dst)
    dict.update(dst, src)
    dst.__dict__.clear()
    dst.__dict__.update(src.__dict__)
    dst.__dict__["_no_grad"] = set(src.__dict__.get("_no_grad", ()))
