// Device memory for our CUDA kernels inside MLX's CUDA backend (0.32.4).
//
// Two traps of MLX's exported API, and the way around each:
// - array::data<T>() goes through Buffer::raw_ptr(), which MOVES the buffer to
//   unified memory at once (a synchronous copy; the device allocation is
//   freed). At graph-building time an input's producer has usually not run
//   yet, so the copy takes stale bytes and the producer later writes into
//   freed memory. dev_ptr() reads the device address instead, as MLX's own
//   kernels do (gpu_ptr).
// - allocator::malloc() returns unified (managed) memory, and when its cache
//   hands back a device buffer it copies that buffer synchronously first;
//   MLX's device allocator (cu::malloc_async) is not exported. alloc_device()
//   gives an output stream-ordered device memory from the device's default
//   memory pool (the pool MLX uses), wrapped as an MLX buffer with its own
//   deleter.
#pragma once

#include <cstddef>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cuda/device.h"

namespace mlx_kernels::cuda {

namespace mx = mlx::core;

// Device address of a's first element (the array's offset included).
void* dev_ptr_void(const mx::array& a);

template <typename T>
T* dev_ptr(const mx::array& a) {
  return static_cast<T*>(dev_ptr_void(a));
}

// Fresh device memory of `bytes` (at least 1 byte), allocated in the order of
// `enc`'s stream: for out.set_data(...) or mx::array(data, shape, dtype).
mx::allocator::Data device_data(size_t bytes, mx::cu::CommandEncoder& enc);

} // namespace mlx_kernels::cuda
