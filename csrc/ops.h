// The public ops: argument validation, shape and dtype rules, and the graph
// node they add. Every backend receives inputs these functions have checked.
#pragma once

#include <optional>

#include "mlx/array.h"
#include "mlx/utils.h"

namespace mlx_kernels {

namespace mx = mlx::core;

// out = x @ dequantize(w).T  (transpose=true)  or  x @ dequantize(w)  (false),
// with w in the affine packed format of mx.quantize. Mirrors
// mx.quantized_matmul(mode="affine").
mx::array quantized_matmul(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const std::optional<mx::array>& biases,
    bool transpose = true,
    int group_size = 64,
    int bits = 4,
    mx::StreamOrDevice s = {});

} // namespace mlx_kernels
