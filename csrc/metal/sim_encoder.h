// The Metal simulator behind the MetalEncoder interface: runs the Metal
// kernels of this package on the CPU (docs/metal-simulator.md).
#pragma once

#include <deque>
#include <string>
#include <vector>

#include "mlxk_metal_sim.h"

#include "cpu_backend.h"
#include "metal/encoder.h"

namespace mlx_kernels::metal {

// Whether the simulator library was built and loads; if not, `why` says why.
bool simulator_available(std::string* why = nullptr);

// The host names of every kernel in the simulator library.
std::vector<std::string> simulator_kernel_names();

class SimEncoder : public MetalEncoder {
 public:
  explicit SimEncoder(const CpuBackend& options, int num_workers);

  void set_kernel(const std::string& name) override;
  void set_input(int index, const mx::array& a) override;
  void set_output(int index, mx::array& a) override;
  void set_bytes(int index, const void* data, size_t size) override;
  void set_threadgroup_memory(int index, size_t bytes) override;
  // Runs the kernel to completion; throws std::runtime_error with the
  // simulator's report if the kernel misbehaved.
  void dispatch_threadgroups(Dim3 grid, Dim3 threadgroup) override;
  // Launches run synchronously: kept until this encoder goes away.
  void add_temporary(mx::array a) override;

 private:
  CpuBackend options_;
  int num_workers_;
  std::string kernel_;
  std::vector<mlxk_sim_buffer> buffers_;
  std::deque<std::string> bytes_; // storage for set_bytes copies
  size_t threadgroup_mem_[8] = {};
  std::vector<mx::array> temporaries_;
};

} // namespace mlx_kernels::metal
