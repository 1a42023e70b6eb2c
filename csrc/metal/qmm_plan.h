// The Metal launch plan of quantized_matmul: from the problem shape to the
// kernel and its threadgroup layout. Plain C++ (no Metal), so that it is
// unit-tested on Linux and the simulator runs exactly what a Mac runs.
#pragma once

#include <string>

#include "metal/encoder.h"
#include "quantized_matmul_params.h"

namespace mlx_kernels::metal {

enum class QmmKernel {
  Qmv, // transpose, few rows: lanes on columns and K, all rows per lane
  Qvm, // not transpose, few rows: a thread per packed word of a weight row
  Qmm, // many rows: 32 x 32 tiles, simdgroup_matrix products
};

struct QmmPlan {
  QmmKernel kernel;
  int rows; // Qmv / Qvm: the row capacity of the instantiation (>= M)
  std::string name; // the [[host_name]] of the instantiation
  Dim3 grid; // threadgroups
  Dim3 threadgroup; // threads per threadgroup
};

// Rows up to which the mat-vec kernels (weights read once for all rows) serve
// M; past it the tiled kernel takes over. Chosen by the design's argument (a
// qmv lane keeps rows x 4 accumulators in registers), not yet measured on an
// Apple GPU: measure and move it there.
constexpr int kQmvMaxRows = 8;

// dtype: "float32", "float16" or "bfloat16". Requires M >= 1.
QmmPlan plan_quantized_matmul(const QmmParams& p, const std::string& dtype);

const char* kernel_kind_name(QmmKernel k);

} // namespace mlx_kernels::metal
