#include "metal/attn_plan.h"

#include <algorithm>
#include <sstream>

namespace mlx_kernels::metal {

namespace {

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

size_t dtype_size(const std::string& dtype) {
  return dtype == "float32" ? 4 : 2;
}

constexpr int kThreads = 128; // 4 simdgroups, every variant but merge
constexpr int kDecodeKeysPerRound = 128; // 4 simdgroups x 32 keys

} // namespace

const char* attn_kernel_name(AttnKernel k) {
  switch (k) {
    case AttnKernel::Prefill: return "prefill";
    case AttnKernel::Decode: return "decode";
  }
  return "?";
}

int prefill_block_k(int D) {
  return D <= 96 ? 32 : (D <= 128 ? 16 : 8);
}

AttnPlan plan_flash_attention(const AttnParams& p, const std::string& dtype) {
  AttnPlan plan{};
  plan.threadgroup = {kThreads, 1, 1};
  plan.splits = 1;
  std::ostringstream name;
  if (p.qL > kDecodeMaxQueries) {
    plan.kernel = AttnKernel::Prefill;
    plan.block_q = 32;
    plan.block_k = prefill_block_k(p.D);
    plan.grid = {
        static_cast<uint32_t>(ceil_div(p.qL, plan.block_q)),
        static_cast<uint32_t>(p.Hq),
        static_cast<uint32_t>(p.B)};
    // K and V tiles [block_k][D + 8] in T.
    plan.threadgroup_memory = 2 * plan.block_k * (p.D + 8) * dtype_size(dtype);
    name << "mlxk_attn_prefill_" << dtype << "_d" << p.D;
  } else {
    plan.kernel = AttnKernel::Decode;
    const int64_t rows = int64_t(p.group()) * std::max(p.qL, 1);
    plan.rows = 1;
    while (plan.rows < std::min<int64_t>(rows, 8)) {
      plan.rows *= 2;
    }
    plan.row_tiles = static_cast<int>(ceil_div(rows, plan.rows));
    // Split the keys while too few threadgroups exist and splits stay long.
    const int64_t base = int64_t(p.B) * p.Hkv * plan.row_tiles;
    int64_t splits = std::min<int64_t>(
        ceil_div(kDecodeTargetThreadgroups, std::max<int64_t>(base, 1)),
        std::max<int64_t>(p.kL / kMinSplitKeys, 1));
    splits = std::clamp<int64_t>(splits, 1, kMaxSplits);
    plan.chunk = static_cast<int>(
        ceil_div(ceil_div(std::max(p.kL, 1), splits), kDecodeKeysPerRound) *
        kDecodeKeysPerRound);
    plan.splits = static_cast<int>(std::max<int64_t>(ceil_div(p.kL, plan.chunk), 1));
    plan.grid = {
        static_cast<uint32_t>(plan.splits),
        static_cast<uint32_t>(p.Hkv),
        static_cast<uint32_t>(int64_t(p.B) * plan.row_tiles)};
    // q rows, p buffer [4][rows][32], combine rows, per-simdgroup max and sum.
    plan.threadgroup_memory =
        4 * (2 * plan.rows * p.D + 4 * plan.rows * 32 + 2 * 4 * plan.rows);
    name << "mlxk_attn_decode_" << dtype << "_d" << p.D << "_r" << plan.rows;
    if (plan.splits > 1) {
      plan.merge_name = "mlxk_attn_merge_" + dtype + "_d" + std::to_string(p.D);
      plan.merge_grid = {static_cast<uint32_t>(int64_t(p.B) * p.Hq * p.qL), 1, 1};
      plan.merge_threadgroup = {32, 1, 1};
    }
  }
  plan.name = name.str();
  return plan;
}

} // namespace mlx_kernels::metal
