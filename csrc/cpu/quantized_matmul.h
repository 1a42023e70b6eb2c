// CPU backend entry point of quantized_matmul.
#pragma once

#include "mlx/array.h"

#include "quantized_matmul_params.h"

namespace mlx_kernels::cpu {

namespace mx = mlx::core;

// Allocates `out` and enqueues the computation on the CPU stream `stream`.
// Inputs are as the op validated them: x [M, K] (any strides), w uint32,
// scales and biases of out's dtype.
void quantized_matmul(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    mx::array& out,
    const QmmParams& params,
    mx::Stream stream);

} // namespace mlx_kernels::cpu
