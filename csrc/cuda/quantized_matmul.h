// The CUDA backend of quantized_matmul (built only against MLX's CUDA build).
#pragma once

#include <vector>

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

// How many clusters of s = 1..8 bulk-kernel blocks (one an SM) this device
// runs at once (element s - 1), as the driver reports it and the plan uses
// it: a GPC whose SM count is no multiple of s leaves SMs idle, so these can
// be below num_sms / s (benchmarks record them next to kernel times).
std::vector<int> bulk_cluster_capacities();

// The bulk kernel's trace (measurement only, set_qmm_bulk_trace in
// qmm_plan.h): the record of the last traced launch, read after the device
// has finished it, and cleared. Layout in quantized_matmul.cu (kBulkTrace*).
struct BulkTraceRecord {
  int grid_x = 0, grid_y = 0, warps = 0, words_per_warp = 0, head_words = 0, max_pairs = 0;
  std::vector<unsigned long long> words; // [grid_y][grid_x][warps][words_per_warp]
};
BulkTraceRecord read_bulk_trace();

} // namespace mlx_kernels::cuda
