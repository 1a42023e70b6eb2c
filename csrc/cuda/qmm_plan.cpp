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
// - k-slice kernel for M <= 16 where the bulk kernel does not take the
//   weights (under ~4 MB on 132 SMs) and K is at most 32 k-steps at M <= 8
//   (4096 at 4-bit, 2048 at 8-bit), 16 at M 9-16: these are latency-bound
//   (the Qwen3-0.6B shapes took ~5.9 us under tc_qmm whatever their size,
//   H100 session 10), so a block's warps split K (one round of loads each)
//   and add their sums through shared memory instead of a cluster of
//   blocks. H100, ncu, session 11, the six small shapes x M 1-8 x both
//   dtypes: 0.73-1.02x tc_qmm's time, geomean 0.84 (1024x1024 float16 M = 1:
//   5.98 -> 4.35 us); session 12, M 9-16 (two 8-row tiles of x): 0.75-0.96x
//   tc_qmm's time on the four shapes of at most 16 k-steps (1024x1024
//   5.4-6.0 us against 7.1-7.6).
// - float32 x goes to the SIMT kernel: the float32 parity bound (1e-5 against
//   float64) rules out tf32 and bf16 operands.
// - simt_qmv (one warp a weight row, one memory round trip) for float16 /
//   bfloat16 x at M = 1 on at most 1 MB of weights, ahead of the k-slice
//   kernel: 0.90-1.00x its time there, slower at M = 2 and above 1 MB (H100,
//   session 22; kSimtSmallMMaxKb below).
#include "cuda/qmm_plan.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>

#include "cuda/plan_knobs.h"

namespace mlx_kernels::cuda {

namespace {
// Tuning knobs for measurements on a GPU (benchmarks/ncu_qmm_gpu.py runs one
// process per setting): MLX_KERNELS_QMM_BLOCKS_PER_SM and
// MLX_KERNELS_QMM_MIN_STEPS override the two constants below, read once.
const int64_t kBlocksPerSm = tuning("MLX_KERNELS_QMM_BLOCKS_PER_SM", 6);
const int64_t kMinStepsPerSplit = tuning("MLX_KERNELS_QMM_MIN_STEPS", 4);
// The split blocks form one thread-block cluster: 8 is the portable maximum.
constexpr int64_t kMaxClusterSplit = 8;
// The bulk-copy kernel for M <= 16 (MLX_KERNELS_QMM_BULK=0 turns it off, for
// an A/B on one build) and its stage buffers a warp (the most that fit).
const bool kBulkEnabled = switched_on("MLX_KERNELS_QMM_BULK");
const int64_t kBulkRing = std::min<int64_t>(tuning("MLX_KERNELS_QMM_RING", kBulkMaxRing), kBulkMaxRing);
// Where it is used: M <= kBulkMaxM and at least kBulkMinBytesPerSm of weights an
// SM (smaller weights: the tensor-core kernel, whose blocks need no x staging).
const int64_t kBulkMaxM = std::min<int64_t>(tuning("MLX_KERNELS_QMM_BULK_MAX_M", 16), 16);
// simt_qmv (the one-pass SIMT kernel) for float16/bfloat16 x at M <= kSimtSmallMMaxM
// on weights of at most kSimtSmallMMaxKb KB, where the k-slice kernel was
// 0.84-1.08x MLX's speed (MLX's kernel there loads and reduces in one pass, as
// simt_qmv does). H100, ncu, session 22, 4-bit group 64, against
// the k-slice kernel (the default then) run twice in the same lease
// (benchmarks/results/candidates_h100_s22_ab.log), us:
// - M = 1, weights <= 1 MB: 1024x1024 3.94 / 4.54 (bfloat16 / float16)
//   against 4.38 / 4.96-5.09; 2048x1024 4.64 / 4.96 against 4.83 / 4.96-5.12;
//   1024x2048 5.02 / 5.31 against 5.22-5.31 / 5.28-5.38 (0.90-1.00x).
// - slower above 1 MB (3072x1024 M = 1 6.27-6.46 against 5.02-5.15; 1024x3072
//   1.06x) and at M = 2 on every shape (1.05-1.59x): both stay with the
//   k-slice kernel.
// Timed for 4-bit weights only; 8-bit ones take the same byte bound.
// MLX_KERNELS_QMM_SIMT_MAX_KB (0: never) and MLX_KERNELS_QMM_SIMT_MAX_M (1 or
// 2, the kernel's rows) override both, for A/B runs.
constexpr int64_t kSimtSmallMMaxKbLimit = int64_t{1} << 30; // 1 TB: no overflow below
const int64_t kSimtSmallMMaxKb =
    knob_in("MLX_KERNELS_QMM_SIMT_MAX_KB", 0, kSimtSmallMMaxKbLimit, 1024);
const int64_t kSimtSmallMMaxM = knob_in("MLX_KERNELS_QMM_SIMT_MAX_M", 1, kSimtSmallMMaxRows, 1);
const int64_t kBulkMinBytesPerSm = 1024 * tuning("MLX_KERNELS_QMM_BULK_MIN_KB_PER_SM", 30);
// The fewest stage buffers a warp (where a warp has more than one stage):
// 2 at M <= 8 keeps one copy in flight while a warp computes; 1 at M 9-16,
// where it lets 16 warps fit next to twice the staged x. H200, ncu, session
// 8 (MLX_KERNELS_QMM_MIN_RING=1 for every M against 2): 128256x4096 M 12-16
// 135-137 -> 120-122 us (16 warps instead of 8), 4096x14336 M 12-16 34-35 ->
// 30 us, no other M 12-16 case slower; but 4096x14336 M 1-8 22-24 -> 27-33
// us. MLX_KERNELS_QMM_MIN_RING=1 or 2 forces one floor for every M (A/B runs).
const int64_t kBulkMinRingKnob = std::min<int64_t>(tuning("MLX_KERNELS_QMM_MIN_RING", 0), 2);
// Measurement only (MLX_KERNELS_QMM_BULK_SPLIT = 1, 2, 4 or 8): the bulk
// plan with this k split where it fits, for A/B runs of the split rule
// (session 13, 14336x4096 with balanced blocks, below: one k part of 7 warps
// 4-6% slower than two k parts of 14: no split-K reduction does not pay).
const int64_t kBulkForcedSplit = tuning("MLX_KERNELS_QMM_BULK_SPLIT", 0);
// Candidate (MLX_KERNELS_QMM_BULK_PUSH=1, off by default; not yet run on a
// GPU): kBulkPushPartials (qmm_plan.h). Session 28's trace (H100,
// benchmarks/results/qmm_h200_notes.md): on the split shapes the kernel ends
// ~2 us after the last warp's last pair (14336x4096 M = 1: 18.2 -> 20.3 us),
// the cluster barrier, the remote reads of the partial sums and a second
// barrier; this leaves the first barrier and local reads.
const bool kBulkPushPartialsKnob = knob_in("MLX_KERNELS_QMM_BULK_PUSH", 0, 1, 0) != 0;
// The k-slice kernel for small weights at M <= 16 (MLX_KERNELS_QMM_KSLICE=0
// turns it off, for an A/B on one build) and the most warps a block
// (MLX_KERNELS_QMM_KSLICE_WARPS, 1 .. kKSliceMaxWarps; K then takes at most
// that many warps' rounds of kslice_batch k-steps).
const bool kKSliceEnabled = switched_on("MLX_KERNELS_QMM_KSLICE");
const int64_t kKSliceWarps =
    std::min<int64_t>(tuning("MLX_KERNELS_QMM_KSLICE_WARPS", kKSliceMaxWarps), kKSliceMaxWarps);
// The largest M it takes (MLX_KERNELS_QMM_KSLICE_MAX_M, 1 .. 16; 8 leaves
// M 9-16 to tc_qmm, for an A/B on one build).
const int64_t kKSliceMaxM = std::min<int64_t>(tuning("MLX_KERNELS_QMM_KSLICE_MAX_M", 16), 16);
// Rounds of loads a k-slice warp may take on small weights
// (MLX_KERNELS_QMM_KSLICE_ROUNDS, 1 .. 4; the kernel loops over batches, the
// plan bounds K by this). H100, ncu, session 12, float16, 2 rounds against
// 1 (tc_qmm) at M 9-16: 1024x4096 9.82-10.59 / 8.93-9.22 us, 1024x3072
// 8.67-9.15 / 8.29-8.35: a second round costs more than tc_qmm's cluster.
const int64_t kKSliceRounds = std::min<int64_t>(tuning("MLX_KERNELS_QMM_KSLICE_ROUNDS", 1), 4);
// Weights the bulk kernel would take but of at most this many KB of packed w
// an SM (MLX_KERNELS_QMM_KSLICE_OVER_BULK_KB_PER_SM, 124 by default: 16 MB on
// 132 SMs; 0 leaves them to the bulk kernel) go to the k-slice kernel with up
// to kKSliceOverBulkRounds rounds of loads a warp. A share of an SM, like the
// bulk kernel's lower bound, so that other SM counts scale it (measured on
// 132 only). H100, ncu, session 15, float16 / bfloat16, bulk against k-slice
// (a 16 MB threshold), M = 1 and 16: 2048x4096 (4.2 MB) 11.4 / 11.2 -> 7.5 /
// 7.4 us and 15.5 / 15.8 -> 11.0 / 10.9 (M = 1 was 0.8x MLX, now 1.2x);
// 4096x4096 (8.4 MB) 12.0 -> 10.4 and 16.5 -> 13.6; 6144x4096 (12.6 MB)
// 14.2 / 14.1 -> 12.4 / 11.9 and 20.1 / 19.2 -> 17.3 / 17.2. Larger weights
// stay with the bulk kernel: with a 40 MB threshold, 10240x4096 (21 MB) M = 16
// 23.6 -> 29.9 us, 14336x4096 27.4 -> 41.5. With 16 MB, 480 of
// test_quantized_matmul.py's 485 GPU cases passed in that session, none
// failed (5 transpose=False cases, which take another kernel, were cut off by
// the time limit).
constexpr int64_t kKSliceOverBulkMaxKbPerSm = int64_t{1} << 30; // 1 TB: no overflow below
const int64_t kKSliceOverBulkKbPerSm =
    knob_in("MLX_KERNELS_QMM_KSLICE_OVER_BULK_KB_PER_SM", 0, kKSliceOverBulkMaxKbPerSm, 124);
constexpr int64_t kKSliceOverBulkRounds = 4;
// The order of tc_qmm's mmas (TcOrder; quantized_matmul.cu) where one row
// tile a warp was measured: H100, ncu, every shape, float16 and bfloat16.
// - 2 or 8 tiles of x (M 9-16, M > 32): kTcInterleaved. Session 18, against
//   the chained order measured twice in the same lease: 0.76-0.98x the time on
//   all 30 cases (M 12, 16, 64); 151936x1024 M = 64 149.0 -> 127.4 us.
// - 4 tiles (M 17-32): kTcInterleavedTail. Plain interleaving was mixed there
//   (0.86-1.14x over 44 cases: at M = 24 a pass pairs a tile with an empty
//   one). Session 19, against the chained order in the same lease, the full
//   grid: 0.90-0.98x on all 44 cases at M 24 and 32 (4096x4096 M = 32 19.3 ->
//   17.9 us); an earlier run in that lease, M 17, 24 and 32: 0.92-1.00x on
//   66. At 8 tiles the same order took 0.98-1.14x the time of kTcInterleaved
//   (M = 64; 1.06-1.14x on the large shapes), so it stays at 4 tiles.
// - 1 tile (M <= 8): chained (untimed).
// MLX_KERNELS_QMM_TC_INTERLEAVE (A/B runs): every variant in one order, 0
// chained, 1 interleaved, 2 interleaved with the one-tile tail.
const int64_t kTcInterleaveKnob = knob_in("MLX_KERNELS_QMM_TC_INTERLEAVE", 0, 2, -1);
TcOrder tc_mma_order(int row_tiles, int m_tiles) {
  if (kTcInterleaveKnob >= 0) {
    return static_cast<TcOrder>(kTcInterleaveKnob);
  }
  if (row_tiles != 1) {
    return kTcChained;
  }
  switch (m_tiles) {
    case 2:
    case 8:
      return kTcInterleaved;
    case 4:
      return kTcInterleavedTail;
    default:
      return kTcChained;
  }
}
// The most warps a k-slice block once its row tiles outnumber the SMs
// (MLX_KERNELS_QMM_KSLICE_WIDE_WARPS, 1 .. kKSliceMaxWarps): 4, from the
// H200's 3072x1024 (192 tiles) in session 11, 8 warps 6.5-7.2 us, 4 warps
// 4.5-5.4. Untried on mid-sized weights, where 4 warps take 2-4 rounds.
const int64_t kKSliceWideWarps =
    std::min<int64_t>(tuning("MLX_KERNELS_QMM_KSLICE_WIDE_WARPS", 4), kKSliceMaxWarps);

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

int64_t align128(int64_t n) {
  return (n + 127) / 128 * 128;
}
} // namespace

// The bulk kernel's plan. Persistent blocks (one an SM, 16 or 8 warps):
// the k split (the cluster size, 1-8) is the one with the least work an SM
// (row tiles a block x stages a k part), a larger split only for 3% less work
// or for more busy warps at no more work. Every block stages its rows of x
// for its k part, so the split must also make those fit in shared memory next
// to the ring floor (min_ring below); none fitting leaves the shape to the
// tensor-core kernel.
bool plan_bulk(const QmmParams& p, int num_sms, const int* cluster_capacity, QmmPlan& plan) {
  const int64_t row_bytes = bulk_row_bytes(p.bits, p.group_size);
  const int64_t k_per_stage = row_bytes * 8 / p.bits;
  const int64_t sms = std::max<int64_t>(num_sms, 1);
  if (!kBulkEnabled || p.M > kBulkMaxM || p.K % k_per_stage != 0 ||
      p.N * p.K * p.bits / 8 < kBulkMinBytesPerSm * sms) {
    return false;
  }
  const int64_t m_tiles = p.M <= 8 ? 1 : 2;
  const int64_t min_ring = kBulkMinRingKnob > 0 ? kBulkMinRingKnob : m_tiles == 2 ? 1 : 2;
  const int64_t x_rows = 8 * m_tiles;
  const int64_t groups_per_stage = k_per_stage / p.group_size;
  const int64_t slot_bytes = 16 * (row_bytes + 2 * groups_per_stage * 2);
  const int64_t stages = p.K / k_per_stage;
  const int64_t tiles = ceil_div(p.N, 16);
  bool found = false;
  int64_t best_cost = 0, best_busy = 0;
  // 16 warps a block where they fit (ncu, session 7: 8 warps left the
  // schedulers idle half the time on dependent-latency stalls), else 8
  // (128256x4096 at M = 16: 8 warps 137.9 us, 10 warps 143.2). Session 13
  // tried blocks of only as many warps as keep the most tiles a warp, the
  // freed shared memory deepening the rings (H100, float16, M 1 / 8 / 16):
  // 14336x4096 20.9 / 21.7 / 26.7 us against 20.8 / 22.6 / 26.2, 4096x14336
  // 24.5 / 30.2 / 32.1 against 21.5 / 25.6 / 31.3 (4 warps a block there):
  // warps to do the math bind these shapes, not bytes in flight (f685e00).
  for (int64_t warps = kBulkWarps; warps >= 8 && !found; warps /= 2) {
    for (int64_t want = 1; want <= kMaxClusterSplit && want <= stages; want *= 2) {
      const int64_t spp = ceil_div(stages, want);
      const int64_t split = ceil_div(stages, spp); // no empty k part
      const int64_t clusters = std::max<int64_t>(
          1, cluster_capacity ? cluster_capacity[split] : sms / split);
      const int64_t tpb = ceil_div(tiles, clusters);
      if (kBulkForcedSplit > 0 && split != kBulkForcedSplit) {
        continue;
      }
      const int64_t x_pitch = spp * k_per_stage * 2 + bulk_x_pad(p.bits);
      const int64_t off_x = kBulkBarrierBytes;
      const int64_t off_xsum = align128(off_x + x_rows * x_pitch);
      const int64_t off_part = align128(off_xsum + 2 * x_rows * spp * groups_per_stage * 2);
      const bool push = kBulkPushPartialsKnob && split > 1;
      const int64_t partial_tiles = push ? ceil_div(tpb, split) * split : split > 1 ? tpb : 0;
      const int64_t off_ring = align128(off_part + partial_tiles * m_tiles * 4 * 32 * 4);
      const int64_t stages_a_warp = ceil_div(tpb, warps) * spp;
      int64_t ring = std::min<int64_t>(kBulkRing, stages_a_warp);
      while (ring > 0 && off_ring + warps * ring * slot_bytes > kBulkMaxSmem) {
        --ring;
      }
      // At least min_ring stage buffers a warp, unless it has fewer stages.
      if (ring < std::min<int64_t>(min_ring, stages_a_warp)) {
        continue;
      }
      const int64_t cost = tpb * spp;
      const int64_t busy = std::min<int64_t>(tpb, warps);
      // A larger split adds a cluster reduction and smaller k parts: it has
      // to save 3% of the work an SM, or keep as much work and busy more warps.
      const bool better = !found || 100 * cost < 97 * best_cost ||
          (cost <= best_cost && busy > best_busy);
      if (!better) {
        continue;
      }
      found = true;
      best_cost = cost;
      best_busy = busy;
      plan.block = static_cast<int>(32 * warps);
      plan.split_k = static_cast<int>(split);
      plan.steps_per_split = spp;
      plan.tiles_per_block = static_cast<int>(tpb);
      plan.ring = static_cast<int>(ring);
      plan.x_pitch = static_cast<int>(x_pitch);
      plan.smem_x = static_cast<int>(off_x);
      plan.smem_xsum = static_cast<int>(off_xsum);
      plan.smem_partials = static_cast<int>(off_part);
      plan.push_partials = push;
      plan.smem_ring = static_cast<int>(off_ring);
      plan.smem_bytes = static_cast<int>(off_ring + warps * ring * slot_bytes);
      plan.grid[0] = split;
      plan.grid[1] = ceil_div(tiles, tpb);
      plan.grid[2] = 1;
    }
  }
  if (!found) {
    return false;
  }
  plan.kernel = QmmKernel::kTensorCoreBulk;
  plan.m_tiles = static_cast<int>(m_tiles);
  plan.row_tiles = 1;
  plan.k_step = static_cast<int>(k_per_stage);
  plan.num_steps = stages;
  plan.row_bytes = static_cast<int>(row_bytes);
  return true;
}

// The k-slice kernel's plan, where its warps can cover K in at most `rounds`
// batches of loads each (M <= kKSliceMaxM, the kernel switched on). Small
// weights are latency-bound: one round of loads a warp, no cluster, one block
// barrier. Two k-steps a warp where that still fills a batch, and at most 4
// warps once the row tiles outnumber the SMs. H200, ncu, session 11 (8 warps
// / 4 warps, M 1-8): 1024x1024 4.2-4.7 / 3.9-4.6 us, 2048x1024 4.4-5.1 /
// 4.2-4.9, 3072x1024 (192 tiles) 6.5-7.2 / 4.5-5.4; tc_qmm 5.2-5.9 on all
// three.
bool plan_kslice(const QmmParams& p, int num_sms, int64_t rounds, QmmPlan& plan) {
  const int64_t k_step = 4 * (128 / p.bits); // tc_qmm's: 4 lanes, 16 bytes each
  const int64_t steps = ceil_div(p.K, k_step);
  const int mt = p.M <= 8 ? 1 : 2;
  const int64_t batch = kslice_batch(mt);
  if (!kKSliceEnabled || p.M > kKSliceMaxM || steps > batch * rounds * kKSliceWarps) {
    return false;
  }
  const int64_t tiles = ceil_div(p.N, 16);
  int64_t warps = std::min<int64_t>(kKSliceWarps, ceil_div(steps, 2));
  if (tiles > std::max(num_sms, 1)) {
    warps = std::min<int64_t>(warps, kKSliceWideWarps);
  }
  warps = std::max<int64_t>(warps, ceil_div(steps, batch * rounds));
  plan.kernel = QmmKernel::kTensorCoreKSlice;
  plan.m_tiles = mt;
  plan.block = static_cast<int>(32 * warps);
  plan.k_step = static_cast<int>(k_step);
  plan.num_steps = steps;
  plan.steps_per_split = ceil_div(steps, warps);
  plan.grid[0] = tiles;
  return true;
}

namespace {
std::atomic<int> plan_sms_override{0};
std::atomic<int> bulk_omit_mask{0};
std::atomic<bool> bulk_trace_on{false};
std::atomic<int64_t> kslice_over_bulk_override{-1}; // KB an SM; -1: kKSliceOverBulkKbPerSm
std::atomic<int64_t> simt_small_m_override{-1}; // KB; -1: kSimtSmallMMaxKb

// A setter's value where one is set (>= 0), else the default.
int64_t override_or(const std::atomic<int64_t>& override_value, int64_t default_value) {
  const int64_t v = override_value.load();
  return v >= 0 ? v : default_value;
}
} // namespace

void set_qmm_simt_small_m_max_kb(int64_t kb) {
  simt_small_m_override.store(kb >= 0 ? std::min(kb, kSimtSmallMMaxKbLimit) : -1);
}

void set_qmm_kslice_over_bulk_kb_per_sm(int64_t kb) {
  kslice_over_bulk_override.store(kb >= 0 ? std::min(kb, kKSliceOverBulkMaxKbPerSm) : -1);
}

int qmm_bulk_omit() {
  return bulk_omit_mask.load();
}

void set_qmm_bulk_omit(int mask) {
  bulk_omit_mask.store(mask);
}

bool qmm_bulk_trace() {
  return bulk_trace_on.load();
}

void set_qmm_bulk_trace(bool on) {
  bulk_trace_on.store(on);
}

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
    case QmmKernel::kTensorCoreKSlice: return "tensor_core_kslice";
    case QmmKernel::kSimt: return "simt";
    case QmmKernel::kSimtSmallM: return "simt_small_m";
    case QmmKernel::kSimtNoTranspose: return "simt_no_transpose";
  }
  return "?";
}

QmmPlan plan_cuda_qmm(
    const QmmParams& p, bool x_is_float32, int num_sms, const int* cluster_capacity) {
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
  const int64_t simt_kb = override_or(simt_small_m_override, kSimtSmallMMaxKb);
  if (p.M <= kSimtSmallMMaxM && p.N * p.K * p.bits / 8 <= 1024 * simt_kb) {
    // simt_qmv: one warp per weight row, 8 a block.
    plan.kernel = QmmKernel::kSimtSmallM;
    plan.block = 256;
    plan.grid[0] = ceil_div(p.N, 8);
    return plan;
  }
  QmmPlan bulk;
  if (plan_bulk(p, num_sms, cluster_capacity, bulk)) {
    // Mid-sized weights to the k-slice kernel instead (kKSliceOverBulkKbPerSm).
    const int64_t kb_per_sm = override_or(kslice_over_bulk_override, kKSliceOverBulkKbPerSm);
    if (p.N * p.K * p.bits / 8 <= 1024 * kb_per_sm * std::max(num_sms, 1) &&
        plan_kslice(p, num_sms, kKSliceOverBulkRounds, plan)) {
      return plan;
    }
    return bulk;
  }
  if (plan_kslice(p, num_sms, kKSliceRounds, plan)) {
    return plan;
  }
  const int64_t tc_k_step = 4 * (128 / p.bits); // 4 lanes, 16 bytes each
  const int64_t tc_steps = ceil_div(p.K, tc_k_step);
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
  plan.mma_order = tc_mma_order(plan.row_tiles, plan.m_tiles);
  plan.k_step = static_cast<int>(tc_k_step);
  plan.num_steps = tc_steps;
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
