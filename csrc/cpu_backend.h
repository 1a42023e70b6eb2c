// Which implementation serves CPU-stream evaluation: the native CPU kernels
// (default) or the Metal kernels run by the Metal simulator. Chosen when an op
// is called (so a lazily evaluated result keeps the choice it was made with):
// mlx_kernels.metal_simulator() or MLX_KERNELS_CPU_BACKEND=metal-sim.
#pragma once

#include <cstdint>

namespace mlx_kernels {

struct CpuBackend {
  bool metal_simulator = false;
  // Simulator only: resume threads in a seeded random order at every
  // suspension, which turns a missing barrier into a wrong answer or a report.
  bool shuffle = false;
  uint64_t seed = 0;

  bool operator==(const CpuBackend& o) const {
    return metal_simulator == o.metal_simulator && shuffle == o.shuffle &&
        seed == o.seed;
  }
};

// The current choice; starts from the environment (MLX_KERNELS_CPU_BACKEND =
// native | metal-sim, MLX_KERNELS_METAL_SIM_SHUFFLE = seed).
CpuBackend current_cpu_backend();
void set_cpu_backend(const CpuBackend& backend);

} // namespace mlx_kernels
