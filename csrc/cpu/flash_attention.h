// CPU backend entry point of flash_attention.
#pragma once

#include <vector>

#include "mlx/array.h"

#include "flash_attention_params.h"

namespace mlx_kernels::cpu {

namespace mx = mlx::core;

// Allocates `out` and enqueues the computation on the CPU stream `stream`.
// inputs: q, k, v (any strides) and, for the array masks, the mask broadcast
// to [B, Hq, qL, kL] (read through its strides, never copied).
void flash_attention(
    const std::vector<mx::array>& inputs,
    mx::array& out,
    const AttnParams& params,
    mx::Stream stream);

} // namespace mlx_kernels::cpu
