// The CUDA backend of flash_attention (built only against MLX's CUDA build).
#pragma once

#include <vector>

#include "mlx/array.h"
#include "mlx/stream.h"

#include "flash_attention_params.h"

namespace mlx_kernels::cuda {

namespace mx = mlx::core;

// inputs: q, k, v (row-contiguous, ops.cpp) and, for array masks, the mask
// broadcast to [B, Hq, qL, kL] (read in place through its strides).
// Allocates `out` and enqueues the kernels on `stream`'s command encoder.
void flash_attention(
    const std::vector<mx::array>& inputs,
    mx::array& out,
    const AttnParams& p,
    const mx::Stream& stream);

} // namespace mlx_kernels::cuda
