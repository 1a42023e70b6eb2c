"""Type stubs of the compiled extension (use the mlx_kernels package instead)."""

from typing import Optional, Union

import mlx.core as mx

def quantized_matmul(
    x: mx.array,
    w: mx.array,
    scales: mx.array,
    biases: Optional[mx.array],
    transpose: bool,
    group_size: int,
    bits: int,
    *,
    stream: Union[None, mx.Stream, mx.Device] = None,
) -> mx.array: ...
def flash_attention(
    q: mx.array,
    k: mx.array,
    v: mx.array,
    *,
    scale: float,
    mask_mode: str,
    mask: Optional[mx.array],
    stream: Union[None, mx.Stream, mx.Device] = None,
) -> mx.array: ...
def set_cpu_backend(metal_simulator: bool, shuffle: bool = False, seed: int = 0) -> None: ...
def get_cpu_backend() -> tuple[bool, bool, int]: ...
def metal_simulator_status() -> tuple[bool, str]: ...
def metal_simulator_kernels() -> list[str]: ...
def plan_metal_quantized_matmul(
    M: int, N: int, K: int, group_size: int, bits: int, transpose: bool, dtype: str
) -> dict: ...
def plan_metal_flash_attention(
    B: int, Hq: int, Hkv: int, qL: int, kL: int, D: int, mask: str, dtype: str
) -> dict: ...
def plan_cuda_quantized_matmul(
    M: int,
    N: int,
    K: int,
    group_size: int,
    bits: int,
    transpose: bool,
    dtype: str,
    num_sms: int = 132,
    cluster_capacity: list[int] | None = None,
) -> dict: ...
def cuda_bulk_cluster_capacity() -> list[int]: ...
def plan_cuda_flash_attention(
    B: int,
    Hq: int,
    Hkv: int,
    qL: int,
    kL: int,
    D: int,
    dtype: str,
    mask: str,
    num_sms: int = 132,
    blocks: bool = False,
    wgmma: bool = True,
    prefill: str = "env",
    dram_gbs: float = 3352.0,
) -> dict: ...
def cuda_peak_dram_gbs() -> float: ...
def set_cuda_quantized_matmul_plan_sms(sms: int) -> None: ...
def set_cuda_quantized_matmul_kslice_over_bulk_kb_per_sm(kb: int) -> None: ...
def set_cuda_quantized_matmul_simt_max_kb(kb: int) -> None: ...
def set_cuda_quantized_matmul_bulk_omit(mask: int) -> None: ...
def set_cuda_quantized_matmul_bulk_trace(on: bool) -> None: ...
def cuda_quantized_matmul_bulk_trace() -> dict: ...
