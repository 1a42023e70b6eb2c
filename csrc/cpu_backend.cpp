#include "cpu_backend.h"

#include <cstdlib>
#include <cstring>
#include <mutex>

namespace mlx_kernels {

namespace {

CpuBackend from_environment() {
  CpuBackend b;
  if (const char* v = std::getenv("MLX_KERNELS_CPU_BACKEND")) {
    b.metal_simulator = std::strcmp(v, "metal-sim") == 0;
  }
  if (const char* v = std::getenv("MLX_KERNELS_METAL_SIM_SHUFFLE")) {
    if (*v != '\0') {
      b.shuffle = true;
      b.seed = std::strtoull(v, nullptr, 10);
    }
  }
  return b;
}

std::mutex& lock() {
  static std::mutex m;
  return m;
}

CpuBackend& state() {
  static CpuBackend b = from_environment();
  return b;
}

} // namespace

CpuBackend current_cpu_backend() {
  std::lock_guard<std::mutex> g(lock());
  return state();
}

void set_cpu_backend(const CpuBackend& backend) {
  std::lock_guard<std::mutex> g(lock());
  state() = backend;
}

} // namespace mlx_kernels
