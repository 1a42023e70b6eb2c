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

// The GPU's peak DRAM bandwidth in GB/s from its memory clock (double data
// rate) and bus width, read once; 0 where the driver reports neither. The
// decode split rule reads it (attn_plan.h: card_wave_blocks_per_sm).
double peak_dram_gbs();

} // namespace mlx_kernels::cuda
