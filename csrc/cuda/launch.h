// How our kernels enter MLX's CUDA graph, shared by the ops' host code:
// driver handles (cudaGetFuncBySymbol, as mlx-extension-facts.md says), plain
// kernel nodes with set_input_array / set_output_array called by the caller
// before each node, and the NaN poison of outputs for the tests.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "mlx/array.h"
#include "mlx/backend/cuda/device.h"

namespace mlx_kernels::cuda {

namespace mx = mlx::core;

void check_cuda(cudaError_t e, const char* what);
void check_cu(CUresult r, const char* what);

// The driver handle of a kernel, looked up once. On that first look-up a kernel
// with dynamic shared memory gets the largest shared-memory carveout, and one
// that needs more than 48 KB is opted in to it (every launch of one kernel
// asks for the same amount).
CUfunction func_of(const void* kernel, size_t dynamic_smem = 0);

int num_sms();

// A tiled TMA tensor map with element strides of 1 and no interleave; elements
// past the tensor's extent read as zeros. strides: bytes, for dimensions
// 1 .. rank - 1. False when the driver refuses the layout.
bool encode_tensor_map(
    CUtensorMap* map, CUtensorMapDataType type, int rank, const void* ptr,
    const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
    CUtensorMapSwizzle swizzle, CUtensorMapL2promotion l2);

// Blocks of a grid-stride loop over n elements (at most 65535).
int64_t elementwise_grid(int64_t n, int block);

// One plain kernel node (no clusters: see add_cluster_node in
// quantized_matmul.cu for why clusters need a child graph).
template <typename... Args>
void add_node(
    mx::cu::CommandEncoder& enc, const void* kernel, dim3 grid, int block,
    size_t dynamic_smem, Args... args) {
  void* params[] = {&args...};
  enc.add_kernel_node_raw(
      func_of(kernel, dynamic_smem), grid, dim3(block), dim3(),
      static_cast<uint32_t>(dynamic_smem), params);
}

// `a` with contiguous, 16-byte aligned rows (what the kernels' 16-byte loads
// need): itself, or a gathered copy (items of 2 or 4 bytes, at most 10
// dimensions), which is appended to `temps` for enc.add_temporary. ops.cpp
// already makes GPU inputs row-contiguous; this catches misaligned views and
// paths that bypass it (vmap).
mx::array aligned_rows(
    const mx::array& a, mx::cu::CommandEncoder& enc, std::vector<mx::array>& temps);

// With MLX_KERNELS_POISON_OUTPUTS set, fills `out` with 0xFF bytes (NaN for
// every float type) before the kernels run, so unwritten elements show.
void poison_output(mx::cu::CommandEncoder& enc, mx::array& out);

} // namespace mlx_kernels::cuda
