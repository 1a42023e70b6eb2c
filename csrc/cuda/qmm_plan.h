// The launch plan of the CUDA quantized matmul: plain C++ (no CUDA headers),
// so it can be unit-tested and read without a GPU. quantized_matmul.cu runs
// exactly what plan_cuda_qmm returns.
#pragma once

#include <cstdint>

#include "quantized_matmul_params.h"

namespace mlx_kernels::cuda {

enum class QmmKernel {
  kNone, // M == 0 or N == 0: nothing to launch
  kTensorCore, // transpose=true, float16/bfloat16 x: tensor-core mat-vec
  kSimt, // transpose=true, float32 x: fp32 SIMT (float32-exact)
  kSimtNoTranspose, // transpose=false: fp32 SIMT, one thread per packed word
};

struct QmmPlan {
  QmmKernel kernel = QmmKernel::kNone;
  // kTensorCore: a block is kWarps warps; each warp owns row_tiles tiles of
  // 16 weight rows (output columns) and m_tiles tiles of 8 rows of x.
  int row_tiles = 1; // RT: 16-row tiles of w per warp
  int m_tiles = 1; // MT: 8-row tiles of x per block (the M chunk is 8 * MT)
  int k_step = 128; // k values one warp consumes per step (4 lanes x 16 bytes)
  int64_t num_steps = 0; // ceil(K / k_step)
  int64_t steps_per_split = 0;
  int split_k = 1; // > 1: K split over a cluster of split_k blocks along grid.x
  int64_t grid[3] = {1, 1, 1};
  int block = 128;
};

constexpr int kTcWarps = 4;

// The (row_tiles, m_tiles) pairs the tensor-core kernel is compiled for
// (quantized_matmul.cu instantiates exactly these); the plan picks only these.
constexpr int kTcVariants[][2] = {{1, 1}, {2, 1}, {1, 2}, {2, 2}, {1, 4}, {1, 8}};

constexpr bool tc_variant_compiled(int row_tiles, int m_tiles) {
  for (const auto& v : kTcVariants) {
    if (v[0] == row_tiles && v[1] == m_tiles) {
      return true;
    }
  }
  return false;
}

const char* qmm_kernel_name(QmmKernel k);

QmmPlan plan_cuda_qmm(const QmmParams& p, bool x_is_float32, int num_sms);

} // namespace mlx_kernels::cuda
