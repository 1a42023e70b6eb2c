// The small interface between the Metal host dispatch code and whatever runs
// the Metal kernels: MLX's Metal command encoder on a Mac (mtl_encoder.cpp),
// or the Metal simulator on the CPU (sim_encoder.cpp). The launch plans and the
// dispatch code above this interface are the same for both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "mlx/array.h"

namespace mlx_kernels::metal {

namespace mx = mlx::core;

struct Dim3 {
  uint32_t x = 1;
  uint32_t y = 1;
  uint32_t z = 1;
};

class MetalEncoder {
 public:
  virtual ~MetalEncoder() = default;
  // Selects the pipeline of the kernel instantiated as [[host_name(name)]].
  virtual void set_kernel(const std::string& name) = 0;
  // Binds [[buffer(index)]] to an array's data (from its offset on).
  virtual void set_input(int index, const mx::array& a) = 0;
  virtual void set_output(int index, mx::array& a) = 0;
  // Binds [[buffer(index)]] to a copy of `size` bytes (setBytes).
  virtual void set_bytes(int index, const void* data, size_t size) = 0;
  // Length of the [[threadgroup(index)]] argument.
  virtual void set_threadgroup_memory(int index, size_t bytes) = 0;
  // Runs the kernel on grid.x * grid.y * grid.z threadgroups.
  virtual void dispatch_threadgroups(Dim3 grid, Dim3 threadgroup) = 0;
  // Keeps a scratch array (e.g. partial results between two dispatches)
  // alive until every kernel encoded so far has run.
  virtual void add_temporary(mx::array a) = 0;

  template <typename T>
  void set_value(int index, const T& value) {
    set_bytes(index, &value, sizeof(T));
  }
};

} // namespace mlx_kernels::metal
