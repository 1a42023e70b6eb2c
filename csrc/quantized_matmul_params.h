// The shape of one quantized matmul, shared by every backend's launch plan.
#pragma once

#include <cstdint>

namespace mlx_kernels {

struct QmmParams {
  int64_t M; // rows of x (all leading dimensions flattened)
  int64_t N; // output columns
  int64_t K; // reduction length
  int group_size; // 32, 64 or 128
  int bits; // 4 or 8
  bool transpose; // true: w is [N, K packed]; false: w is [K, N packed]

  int64_t groups_per_row() const {
    return (transpose ? K : N) / group_size;
  }
  int values_per_word() const {
    return 32 / bits;
  }
};

} // namespace mlx_kernels
