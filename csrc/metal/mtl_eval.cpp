// GPU-stream evaluation on a Mac: MLX's Metal command encoder below the
// MetalEncoder interface, and the package's metallib (mlx_kernels.metallib,
// installed next to this extension module by CMake's mlx_build_metallib).
//
// Compiled only when MLX is a Metal build (MLX_BUILD_METAL). Not yet built or
// run on Apple hardware: see README "What has run where".
#include <dlfcn.h>

#include <cstring>

#include "mlx/allocator.h"
#include "mlx/backend/metal/device.h"
#include "mlx/backend/metal/utils.h"

#include "debug.h"
#include "metal/flash_attention.h"
#include "metal/mtl_eval.h"
#include "metal/quantized_matmul.h"

namespace mlx_kernels::metal {

namespace {

// The directory that holds this extension module (and mlx_kernels.metallib).
std::string binary_dir() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&binary_dir), &info) == 0 ||
      info.dli_fname == nullptr) {
    throw std::runtime_error("mlx_kernels: cannot locate the extension module");
  }
  std::string self = info.dli_fname;
  return self.substr(0, self.find_last_of('/'));
}

class MtlEncoder : public MetalEncoder {
 public:
  explicit MtlEncoder(mx::Stream s)
      : device_(mx::metal::device(s.device)),
        enc_(mx::metal::get_command_encoder(s)),
        library_(device_.get_library("mlx_kernels", binary_dir())) {}

  void set_kernel(const std::string& name) override {
    enc_.set_compute_pipeline_state(device_.get_kernel(name, library_));
  }
  void set_input(int index, const mx::array& a) override {
    enc_.set_input_array(a, index);
  }
  void set_output(int index, mx::array& a) override {
    enc_.set_output_array(a, index);
  }
  void set_bytes(int index, const void* data, size_t size) override {
    enc_.set_bytes(static_cast<const char*>(data), static_cast<int>(size), index);
  }
  void set_threadgroup_memory(int index, size_t bytes) override {
    enc_.set_threadgroup_memory_length(bytes, index);
  }
  void dispatch_threadgroups(Dim3 grid, Dim3 group) override {
    enc_.dispatch_threadgroups(
        MTL::Size(grid.x, grid.y, grid.z), MTL::Size(group.x, group.y, group.z));
  }
  void add_temporary(mx::array a) override {
    enc_.add_temporary(std::move(a));
  }

 private:
  mx::metal::Device& device_;
  mx::metal::CommandEncoder& enc_;
  MTL::Library* library_;
};

// Allocates `out`; false when it is empty (nothing to launch). Poisons it for
// the tests: unified memory, so the fresh buffer is host-visible and not yet
// in use by the GPU.
bool allocate_output(mx::array& out) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
  if (out.size() == 0) {
    return false;
  }
  if (poison_outputs()) {
    std::memset(out.data<void>(), 0xFF, out.nbytes());
  }
  return true;
}

} // namespace

void eval_quantized_matmul_gpu(
    const std::vector<mx::array>& inputs,
    mx::array& out,
    const QmmParams& params,
    mx::Stream stream) {
  if (!allocate_output(out)) {
    return;
  }
  // The op made every input row-contiguous for GPU streams (ops.cpp).
  MtlEncoder enc(stream);
  encode_quantized_matmul(enc, inputs[0], inputs[1], inputs[2], inputs[3], out, params);
}

void eval_flash_attention_gpu(
    const std::vector<mx::array>& inputs,
    mx::array& out,
    const AttnParams& params,
    mx::Stream stream) {
  if (!allocate_output(out)) {
    return;
  }
  // q, k and v were made row-contiguous by the op (ops.cpp); the mask is the
  // broadcast view, bound from its offset and read through its strides.
  MtlEncoder enc(stream);
  const mx::array* mask = inputs.size() > 3 ? &inputs[3] : nullptr;
  encode_flash_attention(enc, inputs[0], inputs[1], inputs[2], mask, out, params);
}

} // namespace mlx_kernels::metal
