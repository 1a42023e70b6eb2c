// CPU-stream evaluation through the Metal simulator: the same host dispatch
// code as a Mac runs (metal/quantized_matmul.cpp), with SimEncoder below it.
#pragma once

#include "mlx/array.h"

#include "cpu_backend.h"
#include "quantized_matmul_params.h"

namespace mlx_kernels::metal {

namespace mx = mlx::core;

void eval_quantized_matmul_simulated(
    const std::vector<mx::array>& inputs,
    mx::array& out,
    const QmmParams& params,
    const CpuBackend& options,
    mx::Stream stream);

} // namespace mlx_kernels::metal
