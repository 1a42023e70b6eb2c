// See launch.h.
#include "cuda/launch.h"

#include <algorithm>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "cuda/device_memory.h"
#include "debug.h"

namespace mlx_kernels::cuda {

namespace {

constexpr size_t kMaxStaticSmem = 48 * 1024;

__global__ void fill_bytes_kernel(uint8_t* p, int64_t n, uint8_t value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    p[i] = value;
  }
}

constexpr int kMaxGatherDims = 10;

struct GatherArgs {
  const void* src;
  void* dst;
  int64_t size;
  int ndim;
  int64_t shape[kMaxGatherDims];
  int64_t strides[kMaxGatherDims]; // elements
};

// One thread per element of the row-contiguous output (grid-stride).
template <typename E>
__global__ void gather_kernel(const GatherArgs a) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < a.size;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = i;
    int64_t at = 0;
    for (int d = a.ndim - 1; d >= 0; --d) {
      at += (rem % a.shape[d]) * a.strides[d];
      rem /= a.shape[d];
    }
    static_cast<E*>(a.dst)[i] = static_cast<const E*>(a.src)[at];
  }
}

} // namespace

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw std::runtime_error(
        std::string("mlx_kernels CUDA: ") + what + ": " + cudaGetErrorString(e));
  }
}

void check_cu(CUresult r, const char* what) {
  if (r != CUDA_SUCCESS) {
    const char* msg = nullptr;
    cuGetErrorString(r, &msg);
    throw std::runtime_error(
        std::string("mlx_kernels CUDA: ") + what + ": " + (msg ? msg : "unknown error"));
  }
}

CUfunction func_of(const void* kernel, size_t dynamic_smem) {
  static std::mutex mu;
  static std::unordered_map<const void*, CUfunction> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(kernel);
  if (it != cache.end()) {
    return it->second;
  }
  cudaFunction_t f;
  check_cuda(cudaGetFuncBySymbol(&f, kernel), "cudaGetFuncBySymbol");
  auto fn = reinterpret_cast<CUfunction>(f);
  if (dynamic_smem > kMaxStaticSmem) {
    check_cu(
        cuFuncSetAttribute(
            fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, static_cast<int>(dynamic_smem)),
        "cuFuncSetAttribute(max dynamic shared memory)");
  }
  if (dynamic_smem > 0) {
    // Kernels that stage through dynamic shared memory want as many resident
    // blocks as it allows; their global loads bypass L1 (cp.async.cg).
    check_cu(
        cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, 100),
        "cuFuncSetAttribute(shared memory carveout)");
  }
  cache.emplace(kernel, fn);
  return fn;
}

bool encode_tensor_map(
    CUtensorMap* map, CUtensorMapDataType type, int rank, const void* ptr,
    const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
    CUtensorMapSwizzle swizzle, CUtensorMapL2promotion l2) {
  const cuuint32_t elem_strides[5] = {1, 1, 1, 1, 1};
  return cuTensorMapEncodeTiled(
             map, type, cuuint32_t(rank), const_cast<void*>(ptr), dims, strides, box,
             elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, l2,
             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

int num_sms() {
  static int n = [] {
    int dev = 0;
    check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
    int v = 0;
    check_cuda(
        cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev),
        "cudaDeviceGetAttribute");
    return v;
  }();
  return n;
}

int64_t elementwise_grid(int64_t n, int block) {
  return std::clamp<int64_t>((n + block - 1) / block, 1, 65535);
}

mx::array aligned_rows(
    const mx::array& a, mx::cu::CommandEncoder& enc, std::vector<mx::array>& temps) {
  if (a.size() == 0 ||
      (a.flags().row_contiguous && reinterpret_cast<uintptr_t>(dev_ptr<uint8_t>(a)) % 16 == 0)) {
    return a;
  }
  if (a.ndim() > kMaxGatherDims || (a.itemsize() != 2 && a.itemsize() != 4)) {
    throw std::runtime_error("mlx_kernels CUDA: cannot gather this array");
  }
  mx::array out(device_data(a.nbytes(), enc), a.shape(), a.dtype());
  GatherArgs g{};
  g.src = dev_ptr<void>(a);
  g.dst = dev_ptr<void>(out);
  g.size = static_cast<int64_t>(a.size());
  g.ndim = static_cast<int>(a.ndim());
  for (int d = 0; d < g.ndim; ++d) {
    g.shape[d] = a.shape(d);
    g.strides[d] = a.strides(d);
  }
  enc.set_input_array(a);
  enc.set_output_array(out);
  const void* kernel = a.itemsize() == 4 ? (const void*)gather_kernel<uint32_t>
                                         : (const void*)gather_kernel<uint16_t>;
  add_node(enc, kernel, dim3(unsigned(elementwise_grid(g.size, 256))), 256, 0, g);
  temps.push_back(out);
  return out;
}

void poison_output(mx::cu::CommandEncoder& enc, mx::array& out) {
  if (!poison_outputs() || out.nbytes() == 0) {
    return;
  }
  enc.set_output_array(out);
  const int64_t n = static_cast<int64_t>(out.nbytes());
  add_node(
      enc, (const void*)fill_bytes_kernel, dim3(unsigned(elementwise_grid(n, 256))), 256, 0,
      dev_ptr<uint8_t>(out), n, uint8_t(0xFF));
}

} // namespace mlx_kernels::cuda
