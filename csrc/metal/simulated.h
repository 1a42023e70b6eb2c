// CPU-stream evaluation through the Metal simulator: the same host dispatch
// code as a Mac runs (metal/quantized_matmul.cpp, metal/flash_attention.cpp),
// with SimEncoder below it.
#pragma once

#include "mlx/array.h"

#include "cpu_backend.h"
#include "flash_attention_params.h"
#include "quantized_matmul_params.h"

namespace mlx_kernels::metal {

namespace mx = mlx::core;

void eval_quantized_matmul_simulated(
    const std::vector<mx::array>& inputs,
    mx::array& out,
    const QmmParams& params,
    const CpuBackend& options,
    mx::Stream stream);

// inputs: q, k, v (any strides; gathered row-contiguous here), and for the
// array masks the [B, Hq, qL, kL] view (read in place through its strides).
void eval_flash_attention_simulated(
    const std::vector<mx::array>& inputs,
    mx::array& out,
    const AttnParams& params,
    const CpuBackend& options,
    mx::Stream stream);

} // namespace mlx_kernels::metal
