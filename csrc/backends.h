// Which backends this build has kernels for. A request for a backend without
// kernels fails at the op call with a clear message: there is no silent
// fallback to MLX's own implementation.
#pragma once

#include <string_view>

#include "mlx/stream.h"

#include "errors.h"

namespace mlx_kernels {

// The name of the GPU backend MLX was built with.
inline const char* gpu_backend_name() {
#if defined(MLX_KERNELS_BUILD_METAL) || defined(_METAL_)
  return "Metal";
#elif defined(MLX_KERNELS_BUILD_CUDA)
  return "CUDA";
#else
  return "GPU";
#endif
}

// Whether `op` has kernels for the GPU backend of this build.
inline bool has_gpu_kernels(const char* op) {
  const std::string_view name(op);
#if defined(MLX_KERNELS_BUILD_METAL)
  return name == "quantized_matmul" || name == "flash_attention";
#elif defined(MLX_KERNELS_BUILD_CUDA)
  return name == "quantized_matmul" || name == "flash_attention";
#else
  (void)name;
  return false;
#endif
}

// Throws unless `op` can run on stream `s` in this build; returns the CPU
// backend choice for CPU streams.
inline void require_backend(const char* op, const mlx::core::Stream& s) {
  if (s.device.type == mlx::core::Device::gpu && !has_gpu_kernels(op)) {
    throw NotImplemented(concat(
        "mlx_kernels.", op, ": the ", gpu_backend_name(),
        " backend is not implemented yet; pass stream=mx.cpu to run the native "
        "CPU kernel."));
  }
}

} // namespace mlx_kernels
