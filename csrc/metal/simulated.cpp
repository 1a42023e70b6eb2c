#include "metal/simulated.h"

#include <cstring>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"

#include "cpu/contiguous.h"
#include "cpu/thread_pool.h"
#include "debug.h"
#include "metal/flash_attention.h"
#include "metal/quantized_matmul.h"
#include "metal/sim_encoder.h"

namespace mlx_kernels::metal {

namespace {

// Allocates `out`, gathers the first `contiguous_inputs` inputs into
// row-contiguous arrays (the rest are bound as they are, e.g. broadcast
// masks), and enqueues `encode(sim_encoder, args, out)` on the CPU stream.
template <typename Encode>
void run_simulated(
    const std::vector<mx::array>& inputs,
    size_t contiguous_inputs,
    mx::array& out,
    const CpuBackend& options,
    mx::Stream stream,
    Encode encode) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
  if (out.size() == 0) {
    return;
  }
  auto& enc = mx::cpu::get_command_encoder(stream);
  std::vector<mx::array> temporaries;
  std::vector<mx::array> args;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto& a = inputs[i];
    args.push_back(
        i < contiguous_inputs ? cpu::row_contiguous(a, enc, temporaries) : a);
    enc.set_input_array(args.back());
  }
  enc.set_output_array(out);
  std::vector<mx::array> weak_args;
  for (const auto& a : args) {
    weak_args.push_back(mx::array::unsafe_weak_copy(a));
  }
  enc.dispatch([args = std::move(weak_args),
                out = mx::array::unsafe_weak_copy(out),
                options,
                encode]() mutable {
    if (poison_outputs()) {
      std::memset(out.data<void>(), 0xFF, out.nbytes());
    }
    SimEncoder sim(options, cpu::num_threads());
    encode(sim, args, out);
  });
  enc.add_temporaries(std::move(temporaries));
}

} // namespace

void eval_quantized_matmul_simulated(
    const std::vector<mx::array>& inputs,
    mx::array& out,
    const QmmParams& params,
    const CpuBackend& options,
    mx::Stream stream) {
  run_simulated(
      inputs, inputs.size(), out, options, stream,
      [params](MetalEncoder& enc, const std::vector<mx::array>& a, mx::array& o) {
        encode_quantized_matmul(enc, a[0], a[1], a[2], a[3], o, params);
      });
}

void eval_flash_attention_simulated(
    const std::vector<mx::array>& inputs,
    mx::array& out,
    const AttnParams& params,
    const CpuBackend& options,
    mx::Stream stream) {
  // q, k, v row-contiguous (as ops.cpp makes them on GPU streams); the mask
  // stays the broadcast view the kernels read through its strides.
  run_simulated(
      inputs, 3, out, options, stream,
      [params](MetalEncoder& enc, const std::vector<mx::array>& a, mx::array& o) {
        encode_flash_attention(
            enc, a[0], a[1], a[2], a.size() > 3 ? &a[3] : nullptr, o, params);
      });
}

} // namespace mlx_kernels::metal
