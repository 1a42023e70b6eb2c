// Metal host dispatch of quantized_matmul, above the MetalEncoder interface.
#pragma once

#include "mlx/array.h"

#include "metal/encoder.h"
#include "quantized_matmul_params.h"

namespace mlx_kernels::metal {

// Encodes y = quantized_matmul(x, w, scales, biases) on `enc`. Inputs are
// row-contiguous, of out's dtype (scales, biases, x); `out` is allocated.
void encode_quantized_matmul(
    MetalEncoder& enc,
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    mx::array& out,
    const QmmParams& p);

// "float32", "float16" or "bfloat16": the dtype part of kernel names.
const char* kernel_dtype_name(mx::Dtype t);

} // namespace mlx_kernels::metal
