// The launch plan of the CUDA quantized matmul: plain C++ (no CUDA headers),
// so it can be unit-tested and read without a GPU. quantized_matmul.cu runs
// exactly what plan_cuda_qmm returns.
#pragma once

#include <cstdint>

#include "quantized_matmul_params.h"

namespace mlx_kernels::cuda {

enum class QmmKernel {
  kNone, // M == 0 or N == 0: nothing to launch
  kTensorCore, // transpose=true, float16/bfloat16 x: tensor-core mat-vec
  kTensorCoreBulk, // the same math for M <= 16, weights streamed by bulk copies
  kTensorCoreKSlice, // the same math for M <= 16 on small weights, K split over a block's warps
  kSimt, // transpose=true, float32 x: fp32 SIMT (float32-exact)
  // transpose=true, float16/bfloat16 x, M = 1 on weights of at most 1 MB
  // (qmm_plan.cpp): simt_qmv, every load of a lane issued before the math
  // (one round trip)
  kSimtSmallM,
  kSimtNoTranspose, // transpose=false: fp32 SIMT, one thread per packed word
};

// The order of tc_qmm's mmas (its kOrder; quantized_matmul.cu says more):
// tile of x by tile, two tiles' chains interleaved, or interleaved with a
// ragged last pass as one tile (and 5 blocks an SM at 4 tiles).
enum TcOrder : int { kTcChained = 0, kTcInterleaved = 1, kTcInterleavedTail = 2 };

struct QmmPlan {
  QmmKernel kernel = QmmKernel::kNone;
  // kTensorCore: a block is kWarps warps; each warp owns row_tiles tiles of
  // 16 weight rows (output columns) and m_tiles tiles of 8 rows of x.
  int row_tiles = 1; // RT: 16-row tiles of w per warp
  int m_tiles = 1; // MT: 8-row tiles of x per block (the M chunk is 8 * MT)
  // kTensorCore: the order of the kernel's mmas (TcOrder above; which plans
  // take which: tc_mma_order in qmm_plan.cpp).
  TcOrder mma_order = kTcChained;
  int k_step = 128; // k values one warp consumes per step (4 lanes x 16 bytes)
  int64_t num_steps = 0; // ceil(K / k_step)
  int64_t steps_per_split = 0;
  int split_k = 1; // > 1: K split over a cluster of split_k blocks along grid.x
  int64_t grid[3] = {1, 1, 1};
  int block = 128;
  // kTensorCoreBulk (k_step is then the k values of one stage, num_steps the
  // stages of K, steps_per_split the stages of one k part, split_k the
  // cluster size along grid.x): persistent blocks of block / 32 warps (16, or
  // 8 where 16 do not fit), one an SM (grid.y blocks a k part); block y owns
  // the 16-row tiles [y * tiles_per_block, (y + 1) * tiles_per_block) over its
  // k part, its warps take every (block / 32)-th of them. The block's rows of x for its k
  // part are staged in shared memory once (x_pitch bytes a row of x).
  int tiles_per_block = 0;
  int ring = 0; // stage buffers a warp (bulk copies in flight)
  int row_bytes = 0; // bytes of one weight row a stage
  int x_pitch = 0; // bytes of one staged row of x
  // Byte offsets of the shared-memory regions (see quantized_matmul.cu).
  int smem_x = 0, smem_xsum = 0, smem_partials = 0, smem_ring = 0;
  int smem_bytes = 0; // dynamic shared memory a block
  // kBulkPushPartials (a candidate, split_k > 1 only): the partials region
  // holds ceil(tiles_per_block / split_k) * split_k tiles' sums (the ranks'
  // sums of the block's own tiles) instead of tiles_per_block.
  bool push_partials = false;
};

constexpr int kTcWarps = 4;

// simt_qmv (QmmKernel::kSimtSmallM): rows of x it can serve (the plan sends
// it M = 1 by default: qmm_plan.cpp), and the 16-byte chunks of a weight row
// a lane loads at once (one round trip for K up to 32 lanes x
// kSimtSmallMUnroll chunks: 2048 values at 4-bit, 1024 at 8-bit).
constexpr int kSimtSmallMMaxRows = 2;
constexpr int kSimtSmallMUnroll = 2;

// The k-slice kernel (M <= 16, weights too small for the bulk kernel, K of
// at most kslice_batch(MT) * kKSliceMaxWarps k-steps by default): a block of
// up to kKSliceMaxWarps warps owns one 16-row tile of w and its warps split
// K; each warp loads kslice_batch(MT) of its k-steps at once (one round of
// loads by default; the rounds knob in qmm_plan.cpp allows more).
// steps_per_split is then the k-steps of one warp, grid.x the row tiles.
constexpr int kKSliceMaxWarps = 8;
// k-steps a warp loads at once: 4 with one 8-row tile of x (MT = 1), 2 with
// two (the x chunks of 16 rows then take as many registers).
constexpr int kslice_batch(int m_tiles) {
  return m_tiles == 1 ? 4 : 2;
}

// The (row_tiles, m_tiles) pairs the tensor-core kernel is compiled for
// (quantized_matmul.cu instantiates exactly these); the plan picks only these.
constexpr int kTcVariants[][2] = {{1, 1}, {2, 1}, {1, 2}, {2, 2}, {1, 4}, {1, 8}};

constexpr bool tc_variant_compiled(int row_tiles, int m_tiles) {
  for (const auto& v : kTcVariants) {
    if (v[0] == row_tiles && v[1] == m_tiles) {
      return true;
    }
  }
  return false;
}

// The bulk-copy kernel's shapes (quantized_matmul.cu uses the same numbers).
constexpr int kBulkWarps = 16; // the most warps a block (one block an SM)
constexpr int kBulkMaxRing = 4;
constexpr int kMaxClusterTable = 9; // cluster capacities are indexed 1..8
constexpr int kBulkBarrierBytes = kBulkWarps * kBulkMaxRing * 8; // mbarriers, first
// The most dynamic shared memory a block may have on sm_90 (227 KB).
constexpr int kBulkMaxSmem = 227 * 1024;
// Bytes of one weight row per stage: a stage holds at least 8 groups, so the
// scales and biases of a row come in 16-byte pieces (the bulk-copy unit).
constexpr int bulk_row_bytes(int bits, int group_size) {
  return group_size * bits > 256 ? group_size * bits : 256; // 8 groups = gs * bits / 8 * 8
}
// Padding of a staged row of x past a multiple of 128 bytes, which with the
// piece swizzle of the kernel keeps the B-fragment reads free of bank
// conflicts (4-bit: 64-byte lane chunks; 8-bit: 32-byte ones).
constexpr int bulk_x_pad(int bits) {
  return bits == 4 ? 64 : 16;
}

// Measurement only (benchmarks/ncu_qmm_omit.py): parts of the bulk kernel to
// leave out, so that Nsight Compute can time the rest. While the mask is not
// 0 the op's results are WRONG; nothing but that script sets it, through
// _ext.set_cuda_quantized_matmul_bulk_omit. Variants exist for float16 x,
// 4-bit weights (both m_tiles); any other bulk call then raises.
constexpr int kBulkOmitMath = 1; // dequantization and mmas (waits and refills stay)
constexpr int kBulkOmitXStaging = 2; // staging x and its group sums
constexpr int kBulkOmitReduce = 4; // the cluster's split-K reduction
constexpr int kBulkOmitAll = 7;
int qmm_bulk_omit();
void set_qmm_bulk_omit(int mask); // 0 .. kBulkOmitAll (checked by the caller)
// Measurement only (benchmarks/trace_qmm_bulk.py): the bulk kernel variant
// that records, per warp, when it started, when x was staged, when each of
// its (tile, stage) pairs arrived and was computed, and when it finished
// (kernel and buffer layout: kBulkTrace* in quantized_matmul.cu). Its results
// are right; only float16 x and 4-bit weights have it, and omit must be 0.
constexpr int kBulkTrace = 8; // a kernel variant bit next to the omit bits
// A candidate (MLX_KERNELS_QMM_BULK_PUSH=1, QmmPlan::push_partials; off by
// default): with a split K, each block writes a finished tile's partial sums
// into the shared memory of the rank that stores the tile, so that after the
// one cluster barrier every rank adds local sums and leaves (the default
// reads the other ranks' sums after the barrier and waits on a second one).
constexpr int kBulkPushPartials = 32;
bool qmm_bulk_trace();
void set_qmm_bulk_trace(bool on);

const char* qmm_kernel_name(QmmKernel k);

// cluster_capacity[s] (s = 1..8, optional): how many clusters of s blocks of
// the bulk kernel (one block an SM) the device runs at once; without it,
// num_sms / s (a GPC may leave SMs over, so the launcher asks the driver).
QmmPlan plan_cuda_qmm(
    const QmmParams& p, bool x_is_float32, int num_sms, const int* cluster_capacity = nullptr);

// The SM count the op plans for: the device's, unless a test set another
// (set_qmm_plan_sms(n > 0); 0 restores the device's) to reach plan shapes that
// a 132-SM GPU only takes for very large weights (e.g. ring > 1 on small N).
int qmm_plan_sms(int device_sms);
void set_qmm_plan_sms(int sms);

// Tests only: the packed-weight KB an SM up to which weights the bulk kernel
// would take go to the k-slice kernel (kb >= 0; below 0 restores
// MLX_KERNELS_QMM_KSLICE_OVER_BULK_KB_PER_SM or its default), so that the
// parity suite runs both kernels on the same shapes.
void set_qmm_kslice_over_bulk_kb_per_sm(int64_t kb);

// Tests only: float16/bfloat16 x at M <= the plan's simt_qmv rows on weights
// of at most this many KB go to simt_qmv (kb >= 0; 0: none; below 0 restores
// MLX_KERNELS_QMM_SIMT_MAX_KB or its default, 1024), so that the parity suite
// runs the k-slice kernel at M = 1 on small weights too.
void set_qmm_simt_small_m_max_kb(int64_t kb);

} // namespace mlx_kernels::cuda
