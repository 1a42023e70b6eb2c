#include "metal/simulated.h"

#include <cstring>
#include <optional>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"

#include "cpu/contiguous.h"
#include "cpu/thread_pool.h"
#include "debug.h"
#include "metal/flash_attention.h"
#include "metal/quantized_matmul.h"
#include "metal/sim_encoder.h"

namespace mlx_kernels::metal {

void eval_quantized_matmul_simulated(
    const std::vector<mx::array>& inputs,
    mx::array& out,
    const QmmParams& params,
    const CpuBackend& options,
    mx::Stream stream) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
  if (out.size() == 0) {
    return;
  }
  auto& enc = mx::cpu::get_command_encoder(stream);
  std::vector<mx::array> temporaries;
  std::vector<mx::array> args;
  for (const auto& a : inputs) {
    args.push_back(cpu::row_contiguous(a, enc, temporaries));
    enc.set_input_array(args.back());
  }
  enc.set_output_array(out);
  enc.dispatch([x = mx::array::unsafe_weak_copy(args[0]),
                w = mx::array::unsafe_weak_copy(args[1]),
                s = mx::array::unsafe_weak_copy(args[2]),
                b = mx::array::unsafe_weak_copy(args[3]),
                out = mx::array::unsafe_weak_copy(out),
                params,
                options]() mutable {
    if (poison_outputs()) {
      std::memset(out.data<void>(), 0xFF, out.nbytes());
    }
    SimEncoder sim(options, cpu::num_threads());
    encode_quantized_matmul(sim, x, w, s, b, out, params);
  });
  enc.add_temporaries(std::move(temporaries));
}

void eval_flash_attention_simulated(
    const std::vector<mx::array>& inputs,
    mx::array& out,
    const AttnParams& params,
    const CpuBackend& options,
    mx::Stream stream) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
  if (out.size() == 0) {
    return;
  }
  auto& enc = mx::cpu::get_command_encoder(stream);
  std::vector<mx::array> temporaries;
  std::vector<mx::array> args;
  // q, k, v row-contiguous (as ops.cpp makes them on GPU streams); the mask
  // stays the broadcast view the kernels read through its strides.
  for (size_t i = 0; i < inputs.size(); ++i) {
    args.push_back(i < 3 ? cpu::row_contiguous(inputs[i], enc, temporaries) : inputs[i]);
    enc.set_input_array(args.back());
  }
  enc.set_output_array(out);
  enc.dispatch([q = mx::array::unsafe_weak_copy(args[0]),
                k = mx::array::unsafe_weak_copy(args[1]),
                v = mx::array::unsafe_weak_copy(args[2]),
                mask = args.size() > 3
                    ? std::optional<mx::array>(mx::array::unsafe_weak_copy(args[3]))
                    : std::nullopt,
                out = mx::array::unsafe_weak_copy(out),
                params,
                options]() mutable {
    if (poison_outputs()) {
      std::memset(out.data<void>(), 0xFF, out.nbytes());
    }
    SimEncoder sim(options, cpu::num_threads());
    encode_flash_attention(sim, q, k, v, mask ? &*mask : nullptr, out, params);
  });
  enc.add_temporaries(std::move(temporaries));
}

} // namespace mlx_kernels::metal
