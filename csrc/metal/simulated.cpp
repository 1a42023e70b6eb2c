#include "metal/simulated.h"

#include <cstring>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"

#include "cpu/contiguous.h"
#include "cpu/thread_pool.h"
#include "debug.h"
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

} // namespace mlx_kernels::metal
