// GPU-stream evaluation on Apple GPUs (Metal builds of MLX only).
#pragma once

#include "mlx/array.h"

#include "flash_attention_params.h"
#include "quantized_matmul_params.h"

namespace mlx_kernels::metal {

namespace mx = mlx::core;

void eval_quantized_matmul_gpu(
    const std::vector<mx::array>& inputs,
    mx::array& out,
    const QmmParams& params,
    mx::Stream stream);

// inputs: q, k, v row-contiguous (ops.cpp), and for the array masks the
// [B, Hq, qL, kL] view, read in place through its strides.
void eval_flash_attention_gpu(
    const std::vector<mx::array>& inputs,
    mx::array& out,
    const AttnParams& params,
    mx::Stream stream);

} // namespace mlx_kernels::metal
