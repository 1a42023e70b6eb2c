#include "metal/flash_attention.h"

#include <cmath>

#include "mlx/allocator.h"

#include "metal/attn_plan.h"
#include "metal/quantized_matmul.h" // kernel_dtype_name

#include "../../metal/flash_attention_args.h"

namespace mlx_kernels::metal {

namespace {

constexpr float kLog2e = 1.4426950408889634f;

mx::array scratch_f32(int64_t n) {
  mx::array a({static_cast<int>(n)}, mx::float32, nullptr, {});
  a.set_data(mx::allocator::malloc(a.nbytes()));
  return a;
}

} // namespace

void encode_flash_attention(
    MetalEncoder& enc,
    const mx::array& q,
    const mx::array& k,
    const mx::array& v,
    const mx::array* mask,
    mx::array& out,
    const AttnParams& p) {
  if (out.size() == 0) {
    return;
  }
  const AttnPlan plan = plan_flash_attention(p, kernel_dtype_name(out.dtype()));

  MlxkAttnArgs args{};
  if (mask != nullptr) {
    for (int d = 0; d < 4; ++d) {
      args.mask_strides[d] = mask->strides()[d];
    }
  }
  args.B = p.B;
  args.Hq = p.Hq;
  args.Hkv = p.Hkv;
  args.qL = p.qL;
  args.kL = p.kL;
  args.D = p.D;
  args.mask = static_cast<int>(p.mask);
  args.qscale = p.scale * kLog2e;
  args.splits = plan.splits;
  args.chunk = plan.chunk;
  args.row_tiles = plan.row_tiles;

  // Buffer indices: the kernels' [[buffer(i)]] (metal/flash_attention.metal).
  // Without an array mask, buffer 3 is bound to q and never read.
  enc.set_kernel(plan.name);
  enc.set_input(0, q);
  enc.set_input(1, k);
  enc.set_input(2, v);
  enc.set_input(3, mask != nullptr ? *mask : q);
  enc.set_output(4, out);
  enc.set_value(5, args);
  if (plan.kernel == AttnKernel::Prefill) {
    enc.dispatch_threadgroups(plan.grid, plan.threadgroup);
    return;
  }
  if (plan.splits == 1) {
    // The partial buffers are not written with one split: bind out there.
    enc.set_output(6, out);
    enc.set_output(7, out);
    enc.dispatch_threadgroups(plan.grid, plan.threadgroup);
    return;
  }
  // Split decode: partial (max, sum) and unnormalized accumulators per
  // (output row, split), then the merge.
  const int64_t slots = int64_t(p.B) * p.Hq * p.qL * plan.splits;
  mx::array part_acc = scratch_f32(slots * p.D);
  mx::array part_ml = scratch_f32(slots * 2);
  enc.set_output(6, part_acc);
  enc.set_output(7, part_ml);
  enc.dispatch_threadgroups(plan.grid, plan.threadgroup);

  enc.set_kernel(plan.merge_name);
  enc.set_input(0, part_acc);
  enc.set_input(1, part_ml);
  enc.set_output(2, out);
  enc.set_value(3, args);
  enc.dispatch_threadgroups(plan.merge_grid, plan.merge_threadgroup);
  enc.add_temporary(std::move(part_acc));
  enc.add_temporary(std::move(part_ml));
}

} // namespace mlx_kernels::metal
