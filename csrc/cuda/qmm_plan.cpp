// The one launch plan of the CUDA quantized matmul (see qmm_plan.h).
//
// Crossovers and sizes, and the measurement behind each:
// - Tensor-core path for every M of float16/bfloat16 x with transpose=true:
//   x rows are the mma's N side (8 per tile), so M = 1..8 costs one mma per
//   16x16 weight tile and the weights are dequantized once per 8 * MT rows.
//   MT = 1, 2, 4, 8 for M <= 8, 16, 32, > 32 (M > 64: more chunks along
//   grid.z, each re-reading w). Chosen from the register budget (MT = 8 is
//   64 accumulator registers a thread), checked on the H200 run recorded in
//   benchmarks/results/qmm_h200_notes.md (M-flatness up to 16).
// - split_k: enough blocks to give every SM kBlocksPerSm blocks of 4 warps,
//   but at least kMinStepsPerSplit k-steps (kMinStepsPerSplit KB of w per
//   warp) per block, and at most 8 (one thread-block cluster; the partials
//   are added through distributed shared memory, no extra launch). Values from
//   the H200 run in the notes (first guess: 6 blocks/SM, 4 steps); session 5
//   (run 4, ncu) tried 1 and 2 steps and 12 blocks/SM through the knobs
//   below: no shape got faster beyond noise, 14336x4096 got slower at 12.
// - float32 x goes to the SIMT kernel: the float32 parity bound (1e-5 against
//   float64) rules out tf32 and bf16 operands.
#include "cuda/qmm_plan.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>

namespace mlx_kernels::cuda {

namespace {
// Tuning knobs for measurements on a GPU (benchmarks/ncu_qmm_gpu.py runs one
// process per setting): MLX_KERNELS_QMM_BLOCKS_PER_SM and
// MLX_KERNELS_QMM_MIN_STEPS override the two constants below, read once.
int64_t tuning(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  const int64_t n = v ? std::atoll(v) : 0;
  return n > 0 ? n : fallback;
}
const int64_t kBlocksPerSm = tuning("MLX_KERNELS_QMM_BLOCKS_PER_SM", 6);
const int64_t kMinStepsPerSplit = tuning("MLX_KERNELS_QMM_MIN_STEPS", 4);
// The split blocks form one thread-block cluster: 8 is the portable maximum.
constexpr int64_t kMaxClusterSplit = 8;
// The bulk-copy kernel for M <= 16 (MLX_KERNELS_QMM_BULK=0 turns it off, for
// an A/B on one build): stage buffers a warp, and how many waves of resident
// warps the k split aims for.
const bool kBulkEnabled = std::getenv("MLX_KERNELS_QMM_BULK") == nullptr ||
    std::atoll(std::getenv("MLX_KERNELS_QMM_BULK")) != 0;
const int64_t kBulkRing = std::min<int64_t>(tuning("MLX_KERNELS_QMM_RING", 2), kBulkMaxRing);
const int64_t kBulkWaves = tuning("MLX_KERNELS_QMM_BULK_WAVES", 2);
// Where it is used: M <= kBulkMaxM and at least kBulkMinBytesPerSm of weights an
// SM. Session 6 (ncu, float16, group 64): against tc_qmm it wins at M <= 4 on
// every shape of 9 MB or more (128256x4096 M = 1: 121 us against 145) and
// loses from M = 5-8 on (x read from L1 by every warp, where tc_qmm stages it
// once a block) and on the 0.5 MB Qwen3 shapes (5.8 us against 5.3).
const int64_t kBulkMaxM = std::min<int64_t>(tuning("MLX_KERNELS_QMM_BULK_MAX_M", 4), 16);
const int64_t kBulkMinBytesPerSm = 1024 * tuning("MLX_KERNELS_QMM_BULK_MIN_KB_PER_SM", 30);
// Usable shared memory of an SM (H100/H200: 228 KB, 1 KB of it reserved a block).
constexpr int64_t kSmemPerSm = 228 * 1024;
constexpr int64_t kSmemReservedPerBlock = 1024;

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}
} // namespace

// Shared memory of a bulk-kernel block: the mbarriers, then for each of the 4
// warps `ring` stages of 16 weight rows and their scales and biases.
int64_t bulk_smem_bytes(int64_t ring, int64_t row_bytes, int64_t scale_bytes) {
  return kBulkBarrierBytes + int64_t(kTcWarps) * ring * 16 * (row_bytes + 2 * scale_bytes);
}

// The k split of the bulk kernel: k_parts (1, 2 or 4 warps of a block) times
// split_k (1-8 blocks of a cluster); the fewest parts that give every resident
// warp slot kBulkWaves warps (at most 32 parts, at least one stage a part).
bool plan_bulk(const QmmParams& p, int num_sms, QmmPlan& plan) {
  const int64_t row_bytes = bulk_row_bytes(p.bits, p.group_size);
  const int64_t k_per_stage = row_bytes * 8 / p.bits;
  const int64_t sms = std::max<int64_t>(num_sms, 1);
  if (!kBulkEnabled || p.M > kBulkMaxM || p.K % k_per_stage != 0 ||
      p.N * p.K * p.bits / 8 < kBulkMinBytesPerSm * sms) {
    return false;
  }
  const int64_t scale_bytes = k_per_stage / p.group_size * 2;
  const int64_t stages = p.K / k_per_stage;
  const int64_t tiles = ceil_div(p.N, 16);
  const auto blocks_per_sm = [&](int64_t ring) {
    const int64_t by_smem =
        kSmemPerSm / (bulk_smem_bytes(ring, row_bytes, scale_bytes) + kSmemReservedPerBlock);
    const int64_t by_regs = 65536 / (32 * kTcWarps * bulk_registers(p.M <= 8 ? 1 : 2));
    return std::max<int64_t>(1, std::min(by_smem, by_regs));
  };
  // Stages a k part from all of them down to one; the number of parts is
  // then rounded up to a product k_parts * split_k (a few parts may be empty).
  const auto factorable = [](int64_t s) {
    const int64_t kp = s % 4 == 0 ? 4 : s % 2 == 0 ? 2 : 1;
    return s / kp <= kMaxClusterSplit;
  };
  int64_t parts = 1;
  for (int64_t spp = stages; spp >= 1; --spp) {
    int64_t s = ceil_div(stages, spp);
    while (s <= 4 * kMaxClusterSplit && !factorable(s)) {
      ++s;
    }
    if (s > 4 * kMaxClusterSplit) {
      break;
    }
    parts = s;
    const int64_t ring = std::min(kBulkRing, spp);
    if (tiles * s >= kBulkWaves * kTcWarps * blocks_per_sm(ring) * sms) {
      break;
    }
  }
  plan.kernel = QmmKernel::kTensorCoreBulk;
  plan.block = 32 * kTcWarps;
  plan.m_tiles = p.M <= 8 ? 1 : 2;
  plan.row_tiles = 1;
  plan.k_parts = parts % 4 == 0 ? 4 : parts % 2 == 0 ? 2 : 1;
  plan.split_k = static_cast<int>(parts / plan.k_parts);
  plan.k_step = static_cast<int>(k_per_stage);
  plan.num_steps = stages;
  plan.steps_per_split = ceil_div(stages, parts);
  plan.ring = static_cast<int>(std::min(kBulkRing, plan.steps_per_split));
  while (plan.ring > 1 && bulk_smem_bytes(plan.ring, row_bytes, scale_bytes) > kBulkMaxSmem) {
    --plan.ring;
  }
  plan.row_bytes = static_cast<int>(row_bytes);
  plan.smem_bytes = static_cast<int>(bulk_smem_bytes(plan.ring, row_bytes, scale_bytes));
  plan.blocks_per_sm = static_cast<int>(blocks_per_sm(plan.ring));
  plan.grid[0] = plan.split_k;
  plan.grid[1] = ceil_div(tiles, kTcWarps / plan.k_parts);
  plan.grid[2] = 1;
  return true;
}

namespace {
std::atomic<int> plan_sms_override{0};
} // namespace

int qmm_plan_sms(int device_sms) {
  const int v = plan_sms_override.load();
  return v > 0 ? v : device_sms;
}

void set_qmm_plan_sms(int sms) {
  plan_sms_override.store(sms > 0 ? sms : 0);
}

const char* qmm_kernel_name(QmmKernel k) {
  switch (k) {
    case QmmKernel::kNone: return "none";
    case QmmKernel::kTensorCore: return "tensor_core";
    case QmmKernel::kTensorCoreBulk: return "tensor_core_bulk";
    case QmmKernel::kSimt: return "simt";
    case QmmKernel::kSimtNoTranspose: return "simt_no_transpose";
  }
  return "?";
}

QmmPlan plan_cuda_qmm(const QmmParams& p, bool x_is_float32, int num_sms) {
  QmmPlan plan;
  if (p.M == 0 || p.N == 0) {
    plan.kernel = QmmKernel::kNone;
    return plan;
  }
  if (!p.transpose) {
    // One thread per packed word of a weight row (32 / bits columns) and 8 rows
    // of x; a loop over K.
    plan.kernel = QmmKernel::kSimtNoTranspose;
    plan.block = 128;
    const int64_t words = p.N * p.bits / 32;
    plan.grid[0] = ceil_div(words, plan.block);
    plan.grid[1] = ceil_div(p.M, 8);
    return plan;
  }
  if (x_is_float32) {
    // One warp per weight row, 8 rows of x per block along grid.y.
    plan.kernel = QmmKernel::kSimt;
    plan.block = 256;
    plan.grid[0] = ceil_div(p.N, 8);
    plan.grid[1] = ceil_div(p.M, 8);
    return plan;
  }
  if (plan_bulk(p, num_sms, plan)) {
    return plan;
  }
  plan.kernel = QmmKernel::kTensorCore;
  plan.block = 32 * kTcWarps;
  plan.m_tiles = p.M <= 8 ? 1 : p.M <= 16 ? 2 : p.M <= 32 ? 4 : 8;
  const int64_t m_chunks = ceil_div(p.M, 8 * plan.m_tiles);
  // Two row tiles a warp (more loads in flight, x fragments reused twice)
  // only where the rows alone fill the machine.
  const int64_t rows_rt2 = 16 * 2 * kTcWarps;
  // (RT = 2 was disabled after wrong results in H200 runs 3-4; those came from
  // array::data() moving inputs to unified memory, see device_memory.h.)
  const int64_t target_blocks = kBlocksPerSm * std::max<int64_t>(num_sms, 1);
  // Compiled for MT <= 2 only (registers: RT = 2 with MT = 4 would need ~200).
  plan.row_tiles =
      plan.m_tiles <= 2 && ceil_div(p.N, rows_rt2) * m_chunks >= target_blocks ? 2 : 1;
  const int64_t rows_per_block = 16 * plan.row_tiles * kTcWarps;
  plan.k_step = 4 * (128 / p.bits); // 4 lanes, 16 bytes each
  plan.num_steps = ceil_div(p.K, plan.k_step);
  const int64_t row_blocks = ceil_div(p.N, rows_per_block);
  const int64_t base = row_blocks * m_chunks;
  const int64_t target = kBlocksPerSm * std::max<int64_t>(num_sms, 1);
  int64_t split = std::max<int64_t>(1, ceil_div(target, base));
  split = std::min(split, std::max<int64_t>(1, plan.num_steps / kMinStepsPerSplit));
  split = std::min<int64_t>(split, kMaxClusterSplit);
  plan.steps_per_split = ceil_div(plan.num_steps, split);
  plan.split_k = static_cast<int>(ceil_div(plan.num_steps, plan.steps_per_split));
  // The split blocks of one row block form a cluster along x (see
  // add_cluster_node in quantized_matmul.cu for why x).
  plan.grid[0] = plan.split_k;
  plan.grid[1] = row_blocks;
  plan.grid[2] = m_chunks;
  return plan;
}

} // namespace mlx_kernels::cuda
