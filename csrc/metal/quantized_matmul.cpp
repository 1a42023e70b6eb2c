#include "metal/quantized_matmul.h"

#include "errors.h"
#include "metal/qmm_plan.h"

namespace mlx_kernels::metal {

const char* kernel_dtype_name(mx::Dtype t) {
  if (t == mx::float32) {
    return "float32";
  } else if (t == mx::float16) {
    return "float16";
  } else if (t == mx::bfloat16) {
    return "bfloat16";
  }
  throw TypeError("Metal kernels take float32, float16 or bfloat16.");
}

void encode_quantized_matmul(
    MetalEncoder& enc,
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    mx::array& out,
    const QmmParams& p) {
  if (p.M == 0 || p.N == 0) {
    return;
  }
  const QmmPlan plan = plan_quantized_matmul(p, kernel_dtype_name(out.dtype()));
  // Buffer indices: the kernels' [[buffer(i)]] (metal/quantized_matmul.metal).
  enc.set_kernel(plan.name);
  enc.set_input(0, w);
  enc.set_input(1, scales);
  enc.set_input(2, biases);
  enc.set_input(3, x);
  enc.set_output(4, out);
  enc.set_value(5, static_cast<int>(p.M));
  enc.set_value(6, static_cast<int>(p.N));
  enc.set_value(7, static_cast<int>(p.K));
  enc.dispatch_threadgroups(plan.grid, plan.threadgroup);
}

} // namespace mlx_kernels::metal
