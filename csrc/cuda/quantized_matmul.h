// The CUDA backend of quantized_matmul (built only against MLX's CUDA build).
#pragma once

#include "mlx/array.h"
#include "mlx/stream.h"

#include "quantized_matmul_params.h"

namespace mlx_kernels::cuda {

namespace mx = mlx::core;

// Allocates `out` and enqueues the kernels on `stream`'s command encoder.
// Inputs are valid (ops.cpp); non-contiguous ones are gathered first.
void quantized_matmul(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    mx::array& out,
    const QmmParams& p,
    const mx::Stream& stream);

} // namespace mlx_kernels::cuda
