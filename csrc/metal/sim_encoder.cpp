#include "metal/sim_encoder.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "errors.h"

namespace mlx_kernels::metal {

namespace {

// The simulator library: libmlx_kernels_metal_sim.so next to this extension
// (or MLX_KERNELS_METAL_SIM_LIB), built by sim/tools/metalsim_build.py.
struct SimLibrary {
  void* handle = nullptr;
  std::string error;
  decltype(&mlxk_sim_launch) launch = nullptr;
  decltype(&mlxk_sim_kernel_names) kernel_names = nullptr;
  decltype(&mlxk_sim_has_kernel) has_kernel = nullptr;

  SimLibrary() {
    std::string path;
    if (const char* env = std::getenv("MLX_KERNELS_METAL_SIM_LIB")) {
      path = env;
    } else {
      Dl_info info;
      if (dladdr(reinterpret_cast<void*>(&simulator_available), &info) == 0 ||
          info.dli_fname == nullptr) {
        error = "cannot locate the mlx_kernels extension module";
        return;
      }
      std::string self = info.dli_fname;
      path = self.substr(0, self.find_last_of('/') + 1) +
          "libmlx_kernels_metal_sim.so";
    }
    handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = dlerror();
      error = concat(
          "the Metal simulator library ", path, " could not be loaded (",
          why ? why : "?",
          "). It is built with the package when a clang >= 15 is found; "
          "install clang (e.g. apt-get install clang-19) and reinstall.");
      return;
    }
    launch = reinterpret_cast<decltype(launch)>(dlsym(handle, "mlxk_sim_launch"));
    kernel_names = reinterpret_cast<decltype(kernel_names)>(
        dlsym(handle, "mlxk_sim_kernel_names"));
    has_kernel =
        reinterpret_cast<decltype(has_kernel)>(dlsym(handle, "mlxk_sim_has_kernel"));
    auto version = reinterpret_cast<decltype(&mlxk_sim_api_version)>(
        dlsym(handle, "mlxk_sim_api_version"));
    if (!launch || !kernel_names || !has_kernel || !version) {
      error = concat("the Metal simulator library ", path, " lacks the C API");
      handle = nullptr;
    } else if (version() != MLXK_SIM_API_VERSION) {
      error = concat(
          "the Metal simulator library ", path, " has API version ", version(),
          ", expected ", MLXK_SIM_API_VERSION);
      handle = nullptr;
    }
  }
};

SimLibrary& library() {
  static SimLibrary lib;
  return lib;
}

SimLibrary& require_library() {
  auto& lib = library();
  if (lib.handle == nullptr) {
    throw NotImplemented(concat("mlx_kernels: ", lib.error));
  }
  return lib;
}

} // namespace

bool simulator_available(std::string* why) {
  auto& lib = library();
  if (why != nullptr) {
    *why = lib.error;
  }
  return lib.handle != nullptr;
}

std::vector<std::string> simulator_kernel_names() {
  std::vector<std::string> names;
  std::istringstream all(require_library().kernel_names());
  for (std::string line; std::getline(all, line);) {
    if (!line.empty()) {
      names.push_back(line);
    }
  }
  return names;
}

SimEncoder::SimEncoder(const CpuBackend& options, int num_workers)
    : options_(options), num_workers_(num_workers) {}

void SimEncoder::set_kernel(const std::string& name) {
  kernel_ = name;
}

// The bytes an array's data spans from its data pointer: nbytes() for a
// row-contiguous array, less for a broadcast view (stride-0 axes).
static size_t span_bytes(const mx::array& a) {
  return a.data_size() * a.itemsize();
}

void SimEncoder::set_input(int index, const mx::array& a) {
  buffers_.push_back(
      {index, const_cast<void*>(static_cast<const void*>(a.data<char>())), span_bytes(a)});
}

void SimEncoder::set_output(int index, mx::array& a) {
  buffers_.push_back({index, a.data<char>(), span_bytes(a)});
}

void SimEncoder::set_bytes(int index, const void* data, size_t size) {
  bytes_.emplace_back(static_cast<const char*>(data), size);
  buffers_.push_back({index, bytes_.back().data(), size});
}

void SimEncoder::set_threadgroup_memory(int index, size_t bytes) {
  if (index < 0 || index >= 8) {
    throw std::out_of_range("threadgroup memory index must be in [0, 8)");
  }
  threadgroup_mem_[index] = bytes;
}

void SimEncoder::add_temporary(mx::array a) {
  temporaries_.push_back(std::move(a));
}

void SimEncoder::dispatch_threadgroups(Dim3 grid, Dim3 threadgroup) {
  auto& lib = require_library();
  mlxk_sim_launch_params p{};
  p.grid[0] = grid.x;
  p.grid[1] = grid.y;
  p.grid[2] = grid.z;
  p.threadgroup[0] = threadgroup.x;
  p.threadgroup[1] = threadgroup.y;
  p.threadgroup[2] = threadgroup.z;
  for (int i = 0; i < 8; ++i) {
    p.threadgroup_mem[i] = threadgroup_mem_[i];
  }
  p.shuffle = options_.shuffle ? 1 : 0;
  p.seed = options_.seed;
  p.num_workers = num_workers_;
  char err[2048] = {0};
  int rc = lib.launch(
      kernel_.c_str(), buffers_.data(), static_cast<int>(buffers_.size()), &p,
      err, sizeof(err));
  buffers_.clear();
  bytes_.clear();
  if (rc != 0) {
    throw std::runtime_error(concat("[Metal simulator] ", err));
  }
}

} // namespace mlx_kernels::metal
