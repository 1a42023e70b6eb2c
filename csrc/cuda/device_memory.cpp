// See device_memory.h.
#include "cuda/device_memory.h"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "mlx/allocator.h"
#include "mlx/backend/cuda/allocator.h"
#include "mlx/backend/cuda/utils.h"

namespace mlx_kernels::cuda {

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw std::runtime_error(
        std::string("mlx_kernels CUDA: ") + what + ": " + cudaGetErrorString(e));
  }
}

// Frees run when MLX drops the last reference to an array, after the GPU work
// that used it has completed (MLX keeps arrays alive until then). A stream of
// our own keeps them off MLX's streams and off the legacy default stream.
cudaStream_t free_stream() {
  static cudaStream_t s = [] {
    cudaStream_t st;
    check(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "cudaStreamCreate");
    return st;
  }();
  return s;
}

// Where MLX moved a buffer to unified memory (Buffer::raw_ptr, e.g. when the
// host reads it), it allocated that memory like this (allocator.cpp).
bool managed_memory_supported() {
  static bool v = [] {
    int dev = 0, value = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice");
    check(
        cudaDeviceGetAttribute(&value, cudaDevAttrConcurrentManagedAccess, dev),
        "cudaDeviceGetAttribute");
    return value != 0;
  }();
  return v;
}

void free_buffer(mx::allocator::Buffer b) {
  auto* cb = static_cast<mx::cu::CudaBuffer*>(b.ptr());
  if (cb == nullptr) {
    return;
  }
  if (cb->device >= 0) {
    cudaFreeAsync(cb->data, free_stream());
  } else if (managed_memory_supported()) {
    cudaFree(cb->data);
  } else {
    cudaFreeHost(cb->data);
  }
  delete cb;
}

} // namespace

void* dev_ptr_void(const mx::array& a) {
  return mx::gpu_ptr<void>(a);
}

mx::allocator::Data device_data(size_t bytes, mx::cu::CommandEncoder& enc) {
  bytes = bytes > 0 ? bytes : 1;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  void* p = nullptr;
  check(cudaMallocAsync(&p, bytes, enc.stream()), "cudaMallocAsync");
  auto* cb = new mx::cu::CudaBuffer{p, bytes, dev};
  return mx::allocator::Data(mx::allocator::Buffer(cb), free_buffer);
}

} // namespace mlx_kernels::cuda
