// CUDA kernels for the affine quantized matmul (MLX's CUDA build).
//
// Data layout (the packed format of mx.quantize):
//   transpose=true : w [N, K * bits / 32] uint32, scales/biases [N, K / gs]
//   transpose=false: w [K, N * bits / 32] uint32, scales/biases [K, N / gs]
//   32 / bits values per uint32, the first in the lowest bits; value q of group
//   g stands for q * scales[g] + biases[g]. x [M, K], out [M, N] row-contiguous.
//
// Kernels (the plan in qmm_plan.cpp picks one):
// - tc_qmm (transpose=true, float16/bfloat16 x, any M): tensor-core mat-vec.
//   mma.sync m16n8k16 with the WEIGHTS as the A operand (16 output columns x
//   16 k) and x as the B operand (16 k x 8 rows of x), float32 accumulators.
//   A warp owns RT tiles of 16 weight rows; lane (g = lane / 4, c = lane % 4)
//   loads, for rows g and g + 8 of each tile, one 16-byte chunk of w (32
//   4-bit or 16 8-bit values) at k = k0 + c * V, dequantizes it in registers
//   (q * s + b in half2/bfloat162 arithmetic; 8-bit bfloat16 through float32)
//   and uses it as A fragments for V / 4 mmas. The order of k inside an mma
//   is free as long as A and B agree: each lane loads the same V consecutive
//   values of its x row (16-byte reads of shared memory) and rearranges them
//   with byte permutes into the order its dequantized weights come in.
//   The block's rows of x for a batch of kU k-steps are staged in shared
//   memory by cp.async (double-buffered, one batch ahead; rows past M and k
//   past K zero-filled; a chunk swizzle keeps the 16-byte fragment reads
//   free of bank conflicts), shared by the 4 warps.
//   Each dequantized weight is applied to all 8 * MT rows of x of the block:
//   w is read once per 8 * MT rows (once for M <= 64). K is split across
//   grid.x when the rows alone cannot fill the SMs: the split blocks form one
//   thread-block cluster (<= 8) and rank 0 adds the others' float32 partial
//   sums in rank order through distributed shared memory. One launch per op.
//   Bytes of w read per output element: bits / 8 * K / (8 * MT) (for M <= 8:
//   K / 2 bytes per output column, once).
// - tc_qmm_bulk (transpose=true, float16/bfloat16 x, M <= 16 on large weights,
//   see qmm_plan.cpp): persistent blocks, each warp streaming 16-row weight
//   tiles through a ring of shared-memory stages filled by TMA tensor copies;
//   x staged once a block; the mma takes q * s and the biases enter through
//   group sums of x (layout, math and mapping above the kernel).
// - tc_qmm_kslice (transpose=true, float16/bfloat16 x, M <= 16 on small
//   weights and K <= 32 k-steps, 16 at M > 8): tc_qmm's mma, with a block's warps
//   splitting K over one 16-row tile and adding their sums in shared memory
//   (latency-bound sizes: one round of loads a warp, no cluster).
// - simt_qmm (transpose=true, float32 x): one warp per weight row, lanes over
//   16-byte chunks of the row, dequantized in float32 and applied to 8 rows
//   of x; a warp reduction (__shfl_xor_sync). Float32-exact; w is read once
//   per 8 rows of x.
// - simt_qmv (transpose=true, float16/bfloat16 x, M = 1 on weights of at
//   most 1 MB by default; up to 2 rows): simt_qmm's mapping with every load
//   of a lane (weights, scales, biases, x) requested before its math: one
//   memory round trip for K <= 2048 at 4-bit.
// - simt_qmm_nt (transpose=false): one thread per packed word of each weight
//   row (32 / bits adjacent output columns) and 8 rows of x, a loop over K;
//   coalesced across threads. w is read once per 8 rows of x.
#include "cuda/quantized_matmul.h"

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <optional>
#include <string>
#include <type_traits>
#include <stdexcept>
#include <utility>
#include <string>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/backend/cuda/device.h"

#include "cuda/async_copy.cuh"
#include "cuda/device_memory.h"
#include "cuda/elements.cuh"
#include "cuda/launch.h"
#include "cuda/qmm_plan.h"

namespace mlx_kernels::cuda {

namespace cg = cooperative_groups;

namespace {

__device__ __forceinline__ uint32_t as_u32(__half2 h) {
  return *reinterpret_cast<uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t as_u32(__nv_bfloat162 h) {
  return *reinterpret_cast<uint32_t*>(&h);
}

// (a & mask) | magic in one LOP3: written as two C operators, the compiler
// emits two (LOP3 takes one immediate), a quarter of the dequantization.
template <uint32_t mask, uint32_t magic>
__device__ __forceinline__ uint32_t and_or(uint32_t a) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;\n" : "=r"(r) : "r"(a), "n"(mask), "n"(magic));
  return r;
}

// 8-bit, float16: bytes 2 bb and 2 bb + 1 of w as the exact half2 (q0, q1):
// 0x64 over each byte is 1024 + q, minus 1024.
__device__ __forceinline__ __half2 q8_pair(uint32_t w, int bb) {
  uint32_t v = __byte_perm(w, 0x64u, bb == 0 ? 0x4140 : 0x4342);
  return __hsub2(*reinterpret_cast<__half2*>(&v), __half2half2(__float2half(1024.f)));
}

// ---------------------------------------------------------------------------
// Tensor-core path.
//
// pos(i, b, h): where, inside a lane's chunk of V consecutive k values, the
// value sits that mma i (0 .. V/4-1) takes as fragment register b (0: k-slot
// 2c, 2c+1; 1: 2c+8, 2c+9), half h. It follows the unpacking order below.
template <int bits>
__host__ __device__ __forceinline__ int chunk_pos(int i, int b, int h) {
  if constexpr (bits == 4) {
    // word i/2; pair p = 2 (i%2) + b holds nibbles p (low half) and p + 4.
    return 8 * (i / 2) + 2 * (i % 2) + b + 4 * h;
  } else {
    // word i; pair b holds bytes 2b (low half) and 2b + 1.
    return 4 * i + 2 * b + h;
  }
}

struct TcArgs {
  const uint32_t* w;
  const void* scales;
  const void* biases;
  const void* x; // [M, K] T, 16-byte aligned rows
  void* out; // T [M, N]
  int64_t M, N, K;
  int64_t groups; // K / gs
  int group_size;
  int group_shift; // log2(group_size): group sizes are 32, 64 or 128
  int64_t num_steps, steps_per_split, mt_total;
  int split; // blocks of one cluster along grid.x, reduced through DSMEM
};

template <typename T>
struct Pair;
template <>
struct Pair<__half> {
  using type = __half2;
};
template <>
struct Pair<__nv_bfloat16> {
  using type = __nv_bfloat162;
};

// The two weight rows a lane of an mma warp loads in a 16-row tile at n0:
// n0 + g and n0 + g + 8 (g = lane / 4, the A fragment's row pair), their
// packed words, scales and biases; rows past N point at row 0 with ok false.
template <typename T>
struct TileRows {
  const uint4* w[2];
  const T* s[2];
  const T* b[2];
  bool ok[2];
  TileRows() = default;
  __device__ __forceinline__ TileRows(const TcArgs& a, int64_t n0, int g, int bits) {
    const int64_t words_per_row = a.K * bits / 32;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t n = n0 + g + 8 * h;
      ok[h] = n < a.N;
      const int64_t nn = ok[h] ? n : 0;
      w[h] = reinterpret_cast<const uint4*>(a.w + nn * words_per_row);
      s[h] = static_cast<const T*>(a.scales) + nn * a.groups;
      b[h] = static_cast<const T*>(a.biases) + nn * a.groups;
    }
  }
};

// Dequantize one 16-byte chunk of a weight row into A-fragment halves:
// frag[i][b] = the pair mma i takes as register b (row r0: a0/a2, r1: a1/a3).
template <typename T, int bits>
__device__ __forceinline__ void dequant_chunk(
    uint4 raw, T s, T b, uint32_t (&frag)[128 / bits / 4][2]) {
  using T2 = typename Pair<T>::type;
  const uint32_t wv[4] = {raw.x, raw.y, raw.z, raw.w};
  if constexpr (bits == 4) {
    constexpr uint32_t kMagic = std::is_same_v<T, __half> ? 0x64006400u : 0x43004300u;
    const T2 s2 = {s, s};
    const T2 b2 = {b, b};
    T2 off;
    if constexpr (std::is_same_v<T, __half>) {
      off = __half2half2(__float2half(1024.f));
    } else {
      off = __bfloat162bfloat162(__float2bfloat16(128.f));
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        uint32_t v = and_or<0x000F000Fu, kMagic>(wv[j] >> (4 * p));
        T2 q = *reinterpret_cast<T2*>(&v);
        q = __hsub2(q, off);
        T2 d = __hfma2(q, s2, b2);
        frag[2 * j + p / 2][p % 2] = as_u32(d);
      }
    }
  } else if constexpr (std::is_same_v<T, __half>) {
    const __half2 s2 = {s, s};
    const __half2 b2 = {b, b};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int bb = 0; bb < 2; ++bb) {
        frag[j][bb] = as_u32(__hfma2(q8_pair(wv[j], bb), s2, b2));
      }
    }
  } else {
    // 8-bit bfloat16: 128 + q is not exact in bfloat16 for q >= 128; go
    // through float32.
    const float sf = __bfloat162float(s);
    const float bf = __bfloat162float(b);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int bb = 0; bb < 2; ++bb) {
        float f0 = float((wv[j] >> (16 * bb)) & 0xFFu);
        float f1 = float((wv[j] >> (16 * bb + 8)) & 0xFFu);
        __nv_bfloat162 d = __floats2bfloat162_rn(fmaf(f0, sf, bf), fmaf(f1, sf, bf));
        frag[j][bb] = as_u32(d);
      }
    }
  }
}

// The B fragments of one row of x for one chunk: xr holds the V values of x
// at the lane's chunk in memory order (V / 2 words of two values), xb gets
// them in the order dequant_chunk produces the weights (register b of mma i
// is xb[2 i + b]; see chunk_pos).
template <int bits>
__device__ __forceinline__ void x_pairs_in_chunk_order(
    const uint32_t (&xr)[64 / bits], uint32_t (&xb)[64 / bits]) {
  constexpr int NI = 128 / bits / 4;
#pragma unroll
  for (int i = 0; i < NI; ++i)
#pragma unroll
    for (int bb = 0; bb < 2; ++bb) {
      if constexpr (bits == 4) {
        // pair (8j + p, 8j + p + 4), p = 2 (i % 2) + bb, j = i / 2
        const int p = 2 * (i % 2) + bb;
        const int j = i / 2;
        xb[2 * i + bb] =
            __byte_perm(xr[4 * j + p / 2], xr[4 * j + p / 2 + 2], (p % 2) ? 0x7632 : 0x5410);
      } else {
        xb[2 * i + bb] = xr[2 * i + bb]; // pair (4i + 2bb, +1)
      }
    }
}

template <typename T>
__device__ __forceinline__ void mma16816(
    float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
    uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

// Split-K over a thread-block cluster (grid.x): the float32 partial sums
// `acc` of every block are added, in rank order, into rank 0's. buf is this
// block's shared-memory area of [slots][floats of acc][32 lanes]; a thread
// with `mine` writes its sums to slot `slot` and, in rank 0, adds the other
// ranks' from the same slot. Every thread of every block calls it (two
// cluster barriers). Returns whether this block is rank 0 (the one to store).
template <typename Acc>
__device__ __forceinline__ bool add_cluster_partials(
    Acc& acc, float* buf, int slot, int split, bool mine) {
  constexpr int F = int(sizeof(Acc) / sizeof(float));
  float(&a)[F] = reinterpret_cast<float(&)[F]>(acc);
  const int lane = threadIdx.x % 32;
  if (mine) {
#pragma unroll
    for (int i = 0; i < F; ++i) {
      buf[(slot * F + i) * 32 + lane] = a[i];
    }
  }
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  const bool rank0 = cluster.block_rank() == 0;
  if (rank0 && mine) {
    for (int q = 1; q < split; ++q) {
      const float* other = cluster.map_shared_rank(buf, q);
#pragma unroll
      for (int i = 0; i < F; ++i) {
        a[i] += other[(slot * F + i) * 32 + lane];
      }
    }
  }
  cluster.sync();
  return rank0;
}

// Batching and shared memory of tc_qmm_kernel<T, bits, RT, MT>.
template <int bits, int RT, int MT>
struct TcShape {
  static constexpr int kStep = 4 * (128 / bits); // k values a warp takes a step
  // k-steps per batch: as many as registers (raw weights) and shared memory
  // (x, double-buffered) allow.
  static constexpr int kU = MT >= 8 ? 1 : MT == 4 ? 2 : (RT == 1 ? 4 : 2);
  static constexpr int kXCols = kU * kStep; // k values of x a batch
  // Row pitch in elements of 2 bytes: 32 bytes (4-bit) or 16 bytes (8-bit)
  // past a multiple of 128 bytes, which with swizzle() makes each
  // quarter-warp's 16-byte reads of B fragments hit 8 different bank groups.
  static constexpr int kXPitch = kXCols + (bits == 4 ? 16 : 8);
  // 4-bit: lanes c and c + 2 read chunks 8 apart (128 bytes, same banks):
  // swap neighbouring chunks in every odd group of 8.
  __host__ __device__ static constexpr int swizzle(int j) {
    return bits == 4 ? (j ^ ((j >> 3) & 1)) : j;
  }
  static constexpr int smem_bytes(int elem) {
    const int x = 2 * 8 * MT * kXPitch * elem;
    const int red = kTcWarps * RT * MT * 4 * 32 * 4;
    return x > red ? x : red;
  }
};

// kOrder, the order of the mmas (TcOrder in qmm_plan.h; the plan's choice:
// tc_mma_order in qmm_plan.cpp, which gives the times). kTcChained: tile by tile.
// kTcInterleaved: the mmas of two 8-row tiles of x (MT >= 2), or the even
// and odd mmas of a chunk into two accumulator sets (MT = 1), alternate, so
// that consecutive mmas do not wait on each other's accumulators. Without it,
// one tile's NI mmas a chunk are a chain of dependent mmas (56 of the 64
// HMMAs a step of the MT = 8 variant read the accumulator the one before
// wrote, cuobjdump -sass), and a branch per tile keeps the compiler from
// interleaving tiles. The bulk kernel does the same with acc / acc2.
// kTcInterleavedTail (the plan's order at 4 tiles): as kTcInterleaved, but a
// pass whose second tile is past M (M = 24 at 4 tiles) does the one tile's
// mmas, even and odd into its own and the empty tile's accumulators (added at
// the end), instead of a pair with an empty tile; and at 4 tiles it asks for
// 5 blocks an SM (<= 102 registers; kTcInterleaved takes 114 at 4-bit, 4
// blocks). H100 times of the three orders: tc_mma_order in qmm_plan.cpp.
// (The launch bounds' second argument 0 asks for nothing: the same code as
// the one-argument form, cuobjdump -sass; 1 would change it.)
template <typename T, int bits, int RT, int MT, int kOrder>
__global__ void __launch_bounds__(32 * kTcWarps, kOrder == kTcInterleavedTail && MT == 4 ? 5 : 0)
    tc_qmm_kernel(TcArgs a) {
  constexpr int V = 128 / bits; // values per 16-byte chunk
  constexpr int NI = V / 4; // mmas per chunk
  constexpr int kStep = 4 * V;
  constexpr bool kTwoAcc = kOrder != kTcChained && MT == 1; // acc2: the odd mmas
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int c = lane % 4;

  // Grid: x = split-K index (the cluster dimension), y = 64-row block,
  // z = chunk of 8 * MT rows of x.
  const int64_t n_base = (int64_t(blockIdx.y) * kTcWarps + warp) * 16 * RT;
  const int64_t s_begin = int64_t(blockIdx.x) * a.steps_per_split;
  const int64_t s_end = min(s_begin + a.steps_per_split, a.num_steps);
  const int64_t t_base = int64_t(blockIdx.z) * MT;
  const T* xg = static_cast<const T*>(a.x);

  float acc[RT][MT][4];
  float acc2[RT][4];
#pragma unroll
  for (int r = 0; r < RT; ++r) {
#pragma unroll
    for (int t = 0; t < MT; ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        acc[r][t][e] = 0.f;
#pragma unroll
    for (int e = 0; e < 4; ++e)
      acc2[r][e] = 0.f;
  }

  // Rows this lane loads: n_base + 16 r + g + 8 h.
  TileRows<T> rows[RT];
#pragma unroll
  for (int r = 0; r < RT; ++r) {
    rows[r] = TileRows<T>(a, n_base + 16 * r, g, bits);
  }

  // The block's rows of x for kU k-steps at a time are staged in shared
  // memory by cp.async, one batch ahead of use (double buffer), and shared by
  // the 4 warps: each warp used to load its own B fragments from global
  // memory right before its mmas, which left that latency exposed and made x,
  // not w, the largest stream through L1 for M > 8 (ncu, H200 session 4).
  using Shape = TcShape<bits, RT, MT>;
  constexpr int kU = Shape::kU;
  constexpr int kXCols = Shape::kXCols;
  constexpr int kXPitch = Shape::kXPitch;
  constexpr int kXRows = 8 * MT;
  constexpr int kXChunksPerRow = kXCols / 8; // 16-byte chunks
  __shared__ __align__(16) unsigned char smem_raw[Shape::smem_bytes(sizeof(T))];
  T* xs = reinterpret_cast<T*>(smem_raw); // [2][kXRows][kXPitch]

  const int K32 = int(a.K);
  const int s_begin32 = int(s_begin);
  const int s_end32 = int(s_end);
  const int64_t m_base = 8 * t_base;
  // Stage batch starting at step s0 into buffer `buf` (zeros past M and K).
  auto stage_x = [&](int s0, int buf) {
    T* dst = xs + buf * kXRows * kXPitch;
    for (int i = threadIdx.x; i < kXRows * kXChunksPerRow; i += 32 * kTcWarps) {
      const int r = i / kXChunksPerRow;
      const int j = i % kXChunksPerRow;
      const int k = s0 * kStep + 8 * j;
      const int64_t m = m_base + r;
      const bool ok = m < a.M && k < K32;
      const T* src = ok ? xg + m * a.K + k : xg;
      const int pj = Shape::swizzle(j);
      const unsigned saddr =
          static_cast<unsigned>(__cvta_generic_to_shared(dst + r * kXPitch + 8 * pj));
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(saddr),
                   "l"(src), "r"(ok ? 16 : 0));
    }
    asm volatile("cp.async.commit_group;\n" ::);
  };

  // Every warp takes part in the batches (the barriers), whether or not it
  // has rows: rows past N load zeros and store nothing.
  // Index math inside the loop is 32-bit (K < 2^31) and the group index a
  // shift: a 64-bit division there cost ~70 instructions a step (ncu).
  if (s_begin32 < s_end32) {
    stage_x(s_begin32, 0);
  }
  int buf = 0;
  for (int s0 = s_begin32; s0 < s_end32; s0 += kU, buf ^= 1) {
    // This batch's weights, scales and biases: all loads issued before the
    // first is used (2 * RT * kU 16-byte loads in flight a lane).
    uint4 raw[kU][RT][2];
    T sc[kU][RT][2], bi[kU][RT][2];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int k = (s0 + u) * kStep + c * V;
      const bool k_ok = (s0 + u) < s_end32 && k < K32;
      const int chunk = k / V;
      const int grp = k >> a.group_shift;
#pragma unroll
      for (int r = 0; r < RT; ++r)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const bool ok = k_ok && rows[r].ok[h];
          raw[u][r][h] = ok ? __ldg(rows[r].w[h] + chunk) : make_uint4(0, 0, 0, 0);
          sc[u][r][h] = ok ? rows[r].s[h][grp] : from_f<T>(0.f);
          bi[u][r][h] = ok ? rows[r].b[h][grp] : from_f<T>(0.f);
        }
    }
    // The next batch's x into the other buffer, then wait for this one's.
    if (s0 + kU < s_end32) {
      stage_x(s0 + kU, buf ^ 1);
      asm volatile("cp.async.wait_group 1;\n" ::);
    } else {
      asm volatile("cp.async.wait_group 0;\n" ::);
    }
    __syncthreads();
    const T* xb_base = xs + buf * kXRows * kXPitch;
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      if (s0 + u >= s_end32) {
        break;
      }
      uint32_t frag[RT][2][NI][2];
#pragma unroll
      for (int r = 0; r < RT; ++r)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          dequant_chunk<T, bits>(raw[u][r][h], sc[u][r][h], bi[u][r][h], frag[r][h]);
      // B fragments of x row 8 t + g of the block: the V values at
      // k = u * kStep + c * V of the batch (zeros past M and K), rearranged
      // into the dequantization order.
      auto x_frags = [&](int t, uint32_t(&xb)[V / 2]) {
        const T* row = xb_base + (8 * t + g) * kXPitch;
        uint32_t xr[V / 2];
#pragma unroll
        for (int q = 0; q < V / 8; ++q) {
          const int j = (u * kStep + c * V) / 8 + q;
          const uint4 v = *reinterpret_cast<const uint4*>(row + 8 * Shape::swizzle(j));
          xr[4 * q + 0] = v.x;
          xr[4 * q + 1] = v.y;
          xr[4 * q + 2] = v.z;
          xr[4 * q + 3] = v.w;
        }
        x_pairs_in_chunk_order<bits>(xr, xb);
      };
      // mma i of row tile r with x fragments xb into accumulators c.
      auto mma_at = [&](float(&c)[4], int r, int i, const uint32_t(&xb)[V / 2]) {
        mma16816<T>(c, frag[r][0][i][0], frag[r][1][i][0], frag[r][0][i][1], frag[r][1][i][1],
                    xb[2 * i], xb[2 * i + 1]);
      };
      if constexpr (kOrder != kTcChained) {
        // Two tiles of x a pass (one at MT = 1), their mmas alternating; a
        // pass past the block's last tile of x is skipped (rows past M
        // inside a pass are zeros in shared memory).
        constexpr int TP = MT >= 2 ? 2 : 1;
#pragma unroll
        for (int t0 = 0; t0 < MT; t0 += TP) {
          if (t_base + t0 < a.mt_total) {
            if constexpr (kOrder == kTcInterleavedTail && TP == 2) {
              if (t_base + t0 + 1 >= a.mt_total) { // the last tile, alone
                uint32_t xb[V / 2];
                x_frags(t0, xb);
#pragma unroll
                for (int i = 0; i < NI; ++i)
#pragma unroll
                  for (int r = 0; r < RT; ++r)
                    mma_at(acc[r][t0 + (i & 1)], r, i, xb);
                continue;
              }
            }
            uint32_t xb[TP][V / 2];
#pragma unroll
            for (int tt = 0; tt < TP; ++tt)
              x_frags(t0 + tt, xb[tt]);
#pragma unroll
            for (int i = 0; i < NI; ++i)
#pragma unroll
              for (int tt = 0; tt < TP; ++tt)
#pragma unroll
                for (int r = 0; r < RT; ++r)
                  mma_at((kTwoAcc && (i & 1)) ? acc2[r] : acc[r][t0 + tt], r, i, xb[tt]);
          }
        }
      } else {
#pragma unroll
        for (int t = 0; t < MT; ++t) {
          if (t_base + t < a.mt_total) {
            uint32_t xb[V / 2];
            x_frags(t, xb);
#pragma unroll
            for (int r = 0; r < RT; ++r)
#pragma unroll
              for (int i = 0; i < NI; ++i)
                mma_at(acc[r][t], r, i, xb);
          }
        }
      }
    }
    // Everyone is done with this buffer before it is staged again.
    __syncthreads();
  }

  if constexpr (kTwoAcc) {
#pragma unroll
    for (int r = 0; r < RT; ++r)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        acc[r][0][e] += acc2[r][e];
  }
  if constexpr (kOrder == kTcInterleavedTail && MT >= 2) {
    // A ragged pass's odd mmas went to the empty tile's accumulators.
#pragma unroll
    for (int t0 = 0; t0 < MT; t0 += 2)
      if (t_base + t0 < a.mt_total && t_base + t0 + 1 >= a.mt_total) {
#pragma unroll
        for (int r = 0; r < RT; ++r)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            acc[r][t0][e] += acc[r][t0 + 1][e];
      }
  }

  // Split-K: the blocks of one cluster (grid.x) hold partial sums of the same
  // outputs; rank 0 adds them in rank order (deterministic) through
  // distributed shared memory.
  if (a.split > 1) {
    // The x buffers are free now (the loop ended with a barrier).
    float* red = reinterpret_cast<float*>(smem_raw); // [kTcWarps][RT * MT * 4][32]
    if (!add_cluster_partials(acc, red, warp, a.split, true)) {
      return;
    }
  }
  // Epilogue: c0, c1 -> (n = row g, m = 2c, 2c+1); c2, c3 -> (row g + 8).
  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int r = 0; r < RT; ++r)
#pragma unroll
    for (int t = 0; t < MT; ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t n = n_base + 16 * r + g + 8 * (e / 2);
        const int64_t m = 8 * (t_base + t) + 2 * c + (e % 2);
        if (n < a.N && m < a.M) {
          out[m * a.N + n] = from_f<T>(acc[r][t][e]);
        }
      }
}

// ---------------------------------------------------------------------------
// k-slice path (M <= 16, small weights; see qmm_plan.cpp): tc_qmm's math
// with the k split inside a block instead of over a cluster.
//
// Layout and mapping: block x owns the 16 weight rows n0 = 16 x .. n0 + 15;
// its W warps (blockDim.x / 32) split the k-steps (kStep = 4 chunks of 16
// bytes = 4 V values): warp w takes steps w, w + W, ... . Lane (g, c) loads,
// for each of its steps, the 16-byte chunks of rows n0 + g and n0 + g + 8 at
// k = step * kStep + c * V with their scale and bias, and the same V values
// of x rows g + 8 t (t < MT) straight from global memory (rows of x are the
// mma's N side; zeros past M and K); all kslice_batch(MT) steps of a warp
// are loaded before the first is used, so a warp's time is one round of
// loads. The mmas alternate between two accumulator sets (two dependent
// chains a tile of x). The W partial sums meet in shared memory and warp 0
// adds them in warp order and stores: one barrier, no cluster, no staging.
template <typename T, int bits, int MT>
__global__ void __launch_bounds__(32 * kKSliceMaxWarps) tc_qmm_kslice_kernel(TcArgs a) {
  constexpr int V = 128 / bits; // values per 16-byte chunk
  constexpr int NI = V / 4; // mmas per chunk
  constexpr int kStep = 4 * V;
  constexpr int kU = kslice_batch(MT);
  const int warps = blockDim.x / 32;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int c = lane % 4;
  const int64_t n_base = int64_t(blockIdx.x) * 16;
  const TileRows<T> rows(a, n_base, g, bits);
  bool x_ok[MT];
  const T* xrow[MT];
#pragma unroll
  for (int t = 0; t < MT; ++t) {
    x_ok[t] = g + 8 * t < a.M;
    xrow[t] = static_cast<const T*>(a.x) + (x_ok[t] ? g + 8 * t : 0) * a.K;
  }

  const int K32 = int(a.K);
  const int steps = int(a.num_steps);
  float acc[MT][2][4] = {};
  for (int s0 = warp; s0 < steps; s0 += kU * warps) {
    uint4 raw[kU][2];
    T sc[kU][2], bi[kU][2];
    uint4 xv[kU][MT][V / 8];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int k = (s0 + u * warps) * kStep + c * V;
      const bool k_ok = s0 + u * warps < steps && k < K32;
      const int chunk = k / V;
      const int grp = k >> a.group_shift;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const bool ok = k_ok && rows.ok[h];
        raw[u][h] = ok ? __ldg(rows.w[h] + chunk) : make_uint4(0, 0, 0, 0);
        sc[u][h] = ok ? rows.s[h][grp] : from_f<T>(0.f);
        bi[u][h] = ok ? rows.b[h][grp] : from_f<T>(0.f);
      }
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        const uint4* xp = reinterpret_cast<const uint4*>(xrow[t] + (k_ok ? k : 0));
#pragma unroll
        for (int q = 0; q < V / 8; ++q) {
          xv[u][t][q] = k_ok && x_ok[t] ? __ldg(xp + q) : make_uint4(0, 0, 0, 0);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      if (s0 + u * warps >= steps) {
        break;
      }
      uint32_t frag[2][NI][2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        dequant_chunk<T, bits>(raw[u][h], sc[u][h], bi[u][h], frag[h]);
      }
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        uint32_t xr[V / 2];
#pragma unroll
        for (int q = 0; q < V / 8; ++q) {
          xr[4 * q + 0] = xv[u][t][q].x;
          xr[4 * q + 1] = xv[u][t][q].y;
          xr[4 * q + 2] = xv[u][t][q].z;
          xr[4 * q + 3] = xv[u][t][q].w;
        }
        uint32_t xb[V / 2];
        x_pairs_in_chunk_order<bits>(xr, xb);
#pragma unroll
        for (int i = 0; i < NI; ++i) {
          mma16816<T>(
              acc[t][i & 1], frag[0][i][0], frag[1][i][0], frag[0][i][1], frag[1][i][1],
              xb[2 * i], xb[2 * i + 1]);
        }
      }
    }
  }

  // The warps' partial sums, added by warp 0 in warp order (deterministic).
  __shared__ float partial[kKSliceMaxWarps][MT * 4][32];
#pragma unroll
  for (int t = 0; t < MT; ++t)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      partial[warp][t * 4 + e][lane] = acc[t][0][e] + acc[t][1][e];
    }
  __syncthreads();
  if (warp != 0) {
    return;
  }
  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int t = 0; t < MT; ++t)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float sum = partial[0][t * 4 + e][lane];
      for (int w = 1; w < warps; ++w) {
        sum += partial[w][t * 4 + e][lane];
      }
      // c0, c1 -> (n = row g, m = 8 t + 2c, + 1); c2, c3 -> (row g + 8).
      const int64_t n = n_base + g + 8 * (e / 2);
      const int64_t m = 8 * t + 2 * c + (e % 2);
      if (n < a.N && m < a.M) {
        out[m * a.N + n] = from_f<T>(sum);
      }
    }
}

// ---------------------------------------------------------------------------
// Bulk-copy path (M <= 16): tensor-core math like tc_qmm, with the weights
// streamed into shared memory by the tensor memory accelerator (TMA) and the
// math rearranged so that a KB of weights costs about half the instructions.
//
// Work: persistent blocks of W = 16 (or 8) warps, one an SM. grid.x is the k
// part (a cluster of `split` blocks shares the row tiles and adds its partial
// sums through distributed shared memory at the end); block y owns the
// 16-row tiles [y * tiles_per_block, ...), warp w every W-th of them
// starting at w. A warp streams (tile, stage) after (tile, stage) through its
// own ring of `ring` stage buffers: a stage is `row_bytes` of each of its 16
// weight rows (8 or 16 quantization groups) plus their scales and biases,
// brought by three tensor copies that lane 0 issues and that complete on the
// slot's mbarrier, so the bytes in flight are set by shared memory, not by
// registers.
//
// Math: out[m, n] = sum_k x[m, k] q[n, k] s[n, g(k)] + sum_g b[n, g] X[m, g],
// X[m, g] = the sum of x[m, k] over group g.
// - The first sum is tc_qmm's mma with A = q * s (one HFMA2 a pair of values
//   after a LOP3: the nibble lands in the mantissa of a magic number, and
//   (magic + q) * s - magic * s is q * s with a single rounding). No bias add
//   a weight: that was a third of the dequantization (ncu, session 6).
// - The second is one m16n8k8 mma a stage (A: the stage's 8 biases of each
//   row, B: X in two halves hi + lo, so it is float32-accurate).
// - The block's rows of x for its k part are staged once, before the loop,
//   in the order the B fragments take them (the per-lane byte permutes of
//   tc_qmm done once a block instead of once a warp and step), together with
//   X; every warp then reads its fragments with 16-byte shared loads that do
//   not grow with M (tc_qmm-bulk v1 read x from L1 a warp: its time grew
//   with M).
//
// Shared memory (offsets from the plan): mbarriers [kBulkWarps][kBulkMaxRing];
// staged x [8 MT rows][x_pitch bytes]: for step j of the k part (4 V values)
// and lane c, the V values lane c multiplies, in fragment order, as V / 8
// 16-byte pieces, piece p at slot swizzle(p, c) (conflict-free with the
// row padding, see bulk_x_pad); X hi and lo [8 MT rows][groups of the k part];
// split > 1: partial sums [tiles_per_block][MT * 4][32 lanes] float; then the
// rings: for each warp and slot, w [row_bytes / 64 steps][16 rows][64 B]
// (step-major; row-major [16][row_bytes] when the driver refuses that view),
// scales [16][groups a stage], biases [16][groups a stage]. Rows past N
// arrive as zeros (TMA fills out-of-bounds elements) and are not stored.
// Thread mapping per 64-byte step (as tc_qmm): lane (g, c) dequantizes the
// 16 bytes at c * 16 of rows g and g + 8 into A fragments and multiplies
// them with x rows 8 t + g (t < MT).
struct BulkArgs {
  CUtensorMap w_map; // uint8 (64 B, N, row bytes / 64) or (64 B, row bytes / 64, N)
  CUtensorMap s_map; // T (groups, N), box (groups a stage, 16)
  CUtensorMap b_map;
  const void* x;
  void* out;
  int64_t M, N, K;
  int group_size;
  int group_shift;
  int row_bytes; // bytes of a weight row a stage
  int groups_per_stage; // scales (and biases) of a row a stage: 8 or 16
  int stages; // K / (k values a stage)
  int stages_per_part; // stages of one k part (grid.x)
  int split; // blocks of a cluster (grid.x)
  int tiles; // 16-row tiles of w
  int tiles_per_block;
  int ring; // stage buffers a warp, <= kBulkMaxRing
  int step_major; // 1: w_map is the (64 B, N, steps) view
  int x_pitch; // bytes of a staged row of x
  int smem_x, smem_xsum, smem_partials, smem_ring; // region offsets
  unsigned long long* trace; // the kBulkTrace variant's record (below); else null
};

// The kBulkTrace variant (measurement only, benchmarks/trace_qmm_bulk.py):
// lane 0 of every warp writes kTraceWords 64-bit words at
// trace[((blockIdx.y * gridDim.x + blockIdx.x) * kBulkWarps + warp) * kTraceWords]:
// [0] %globaltimer (ns) at entry, [1] clock64 at entry, [2] clock64 once x is
// staged (after the block barrier), [3] after the last pair's math, [4] at the
// end (after the cluster reduction), [5] %globaltimer at the end, [6] the SM
// id | the warp's pair count << 32, [7] clock64 once lane 0 has issued the
// first ring fill (before x is staged), [8] clock64 once the cluster barrier
// before the split-K reduction has passed (0 without a split); then for pair
// i < kTraceMaxPairs [9 + 2 i] clock64 when its stage had arrived, [10 + 2 i]
// when its math was done.
constexpr int kTraceHead = 9;
constexpr int kTraceMaxPairs = 64;
constexpr int kTraceWords = kTraceHead + 2 * kTraceMaxPairs;
constexpr int kTraceMaxBlocks = 1024;

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Dequantize one 16-byte chunk into A fragments of q * s (no bias), in the
// pair order of dequant_chunk (chunk_pos).
template <typename T, int bits>
__device__ __forceinline__ void dequant_scaled(
    uint4 raw, T s, uint32_t (&frag)[128 / bits / 4][2]) {
  using T2 = typename Pair<T>::type;
  const uint32_t wv[4] = {raw.x, raw.y, raw.z, raw.w};
  const T2 s2 = {s, s};
  if constexpr (bits == 4 && std::is_same_v<T, __half>) {
    // Nibble at bits 4-7 of each half over 0x5400 (64, unit 1/16 there):
    // the half is 64 + q exactly; (64 + q) * s - 64 * s = q * s, one rounding.
    // (64 * s overflows only for |s| >= 1024.)
    const T2 c2 = __hmul2(s2, __float2half2_rn(-64.f));
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t w = wv[j];
      const uint32_t sh[4] = {w << 4, w, w >> 4, w >> 8}; // nibble p (and p + 4) at bits 4-7
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        uint32_t v = and_or<0x00F000F0u, 0x54005400u>(sh[p]);
        frag[2 * j + p / 2][p % 2] = as_u32(__hfma2(*reinterpret_cast<T2*>(&v), s2, c2));
      }
    }
  } else if constexpr (bits == 4) {
    // bfloat16: nibble at bits 0-3 over 0x4300 (128, unit 1).
    const T2 c2 = __hmul2(s2, __float2bfloat162_rn(-128.f));
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t w = wv[j];
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        uint32_t v = and_or<0x000F000Fu, 0x43004300u>(w >> (4 * p));
        frag[2 * j + p / 2][p % 2] = as_u32(__hfma2(*reinterpret_cast<T2*>(&v), s2, c2));
      }
    }
  } else if constexpr (std::is_same_v<T, __half>) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int bb = 0; bb < 2; ++bb) {
        frag[j][bb] = as_u32(__hmul2(q8_pair(wv[j], bb), s2));
      }
    }
  } else {
    // 8-bit bfloat16: 128 + q is not exact in bfloat16 for q >= 128; float32.
    const float sf = __bfloat162float(s);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int bb = 0; bb < 2; ++bb) {
        const float f0 = float((wv[j] >> (16 * bb)) & 0xFFu);
        const float f1 = float((wv[j] >> (16 * bb + 8)) & 0xFFu);
        frag[j][bb] = as_u32(__floats2bfloat162_rn(f0 * sf, f1 * sf));
      }
    }
  }
}

template <typename T>
__device__ __forceinline__ void mma1688(
    float (&c)[4], uint32_t a0, uint32_t a1, uint32_t b0) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(b0));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(b0));
  }
}

// The output (column n, row m of x) of float f of a tile's stored partial
// sums [MT][4 accumulators][32 lanes] (the m16n8 C layout): c0, c1 -> (row g
// of the tile, m = 2c, 2c + 1), c2, c3 -> (row g + 8).
__device__ __forceinline__ void partial_coords(int f, int64_t tile, int64_t& n, int64_t& m) {
  const int t = f / 128;
  const int e = (f / 32) % 4;
  const int ln = f % 32;
  n = tile * 16 + ln / 4 + 8 * (e / 2);
  m = 8 * t + 2 * (ln % 4) + (e % 2);
}

// Where piece p (16 bytes) of lane c's staged x chunk sits: 4-bit chunks are
// 64 bytes, and lanes c and c + 2 would hit the same banks without the turn.
template <int bits>
__device__ __forceinline__ int x_piece_slot(int p, int c) {
  return bits == 4 ? ((p + c) & 3) : p;
}

// kVariant (qmm_plan.h): 0, the kernel; or, for measurement only, the parts
// of the kernel left out (kBulkOmit*) so that ncu can time the rest
// (benchmarks/ncu_qmm_omit.py; the output is then wrong), or the trace
// (kBulkTrace); or the candidate kBulkPushPartials (the split-K partial sums
// written into the owning block's shared memory as each tile ends).
template <typename T, int bits, int MT, int kVariant = 0>
__global__ void __launch_bounds__(32 * kBulkWarps, 1)
    tc_qmm_bulk_kernel(const __grid_constant__ BulkArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int V = 128 / bits; // values per 16-byte chunk
  constexpr int NI = V / 4; // mmas per chunk
  constexpr int kPieces = V / 8; // 16-byte pieces of a lane's x chunk
  constexpr int kChunkBytes = 2 * V; // bytes of a lane's x chunk
  constexpr int kStepBytes = 4 * kChunkBytes; // bytes of staged x a step and row
  constexpr int kXRows = 8 * MT;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int c = lane % 4;
  const int warps = int(blockDim.x) / 32;
  constexpr bool kTrace = (kVariant & kBulkTrace) != 0;
  constexpr bool kPush = (kVariant & kBulkPushPartials) != 0;
  unsigned long long* trace = kTrace && lane == 0
      ? a.trace + (size_t(blockIdx.y * gridDim.x + blockIdx.x) * kBulkWarps + warp) * kTraceWords
      : nullptr;
  // trace[word] = the SM clock now (the trace variant's lane 0; else nothing)
  auto stamp = [&](int word) {
    if constexpr (kTrace) {
      if (trace) {
        trace[word] = clock64();
      }
    }
  };
  if constexpr (kTrace) {
    if (trace) {
      trace[0] = global_ns();
    }
  }
  stamp(1);

  const int st_begin = int(blockIdx.x) * a.stages_per_part;
  const int st_count = min(a.stages_per_part, a.stages - st_begin); // >= 1 (plan)
  const int tile_begin = int(blockIdx.y) * a.tiles_per_block;
  const int tile_end = min(tile_begin + a.tiles_per_block, a.tiles);
  const int my_tiles = tile_begin + warp < tile_end
      ? (tile_end - tile_begin - warp + warps - 1) / warps
      : 0;
  const int total = my_tiles * st_count; // (tile, stage) pairs of this warp
  if constexpr (kTrace) {
    if (trace) {
      unsigned smid;
      asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
      trace[6] = smid | (static_cast<unsigned long long>(total) << 32);
    }
  }

  const int ring = a.ring;
  const int spr = a.groups_per_stage;
  const int w_bytes = 16 * a.row_bytes; // of a slot
  const int slot_bytes = w_bytes + 2 * 16 * spr * int(sizeof(T));
  const uint32_t bars = smem_u32(smem) + warp * kBulkMaxRing * 8;
  unsigned char* slots = smem + a.smem_ring + warp * ring * slot_bytes;
  const int k_per_stage = a.row_bytes * 8 / bits;
  const int steps = a.row_bytes / 64;
  // Where row r's 16 bytes of step j start in a slot.
  const int row_stride = a.step_major ? 64 : a.row_bytes;
  const int step_stride = a.step_major ? 16 * 64 : 64;

  if (lane == 0) {
    for (int s = 0; s < ring; ++s) {
      mbar_init(bars + 8 * s, 1);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncwarp();
  // kPush: blocks write each other's shared memory from their first finished
  // tile on, which is allowed once every block of the cluster has started:
  // each thread arrives here and waits once x is staged (all but free: the
  // blocks start together and x takes microseconds).
  if constexpr (kPush) {
    asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
  }

  // Pair i of this warp (tile i / st_count, stage i % st_count of the k part)
  // into slot i % ring (lane 0 only).
  auto issue = [&](int i) {
    const int slot = i % ring;
    const int tl = i / st_count;
    const int st = st_begin + (i - tl * st_count);
    const int n0 = (tile_begin + warp + warps * tl) * 16;
    unsigned char* sl = slots + slot * slot_bytes;
    const uint32_t bar = bars + 8 * slot;
    mbar_arrive_expect_tx(bar, uint32_t(slot_bytes));
    if (a.step_major) {
      tma_load_3d(smem_u32(sl), &a.w_map, 0, n0, st * steps, bar);
    } else {
      tma_load_3d(smem_u32(sl), &a.w_map, 0, st * steps, n0, bar);
    }
    const int g0 = st * spr;
    tma_load_2d(smem_u32(sl + w_bytes), &a.s_map, g0, n0, bar);
    tma_load_2d(smem_u32(sl + w_bytes + 16 * spr * int(sizeof(T))), &a.b_map, g0, n0, bar);
  };
  // x is staged one thread a (row of x, group of the k part), task
  // u = m * groups + gi, in batches of kBatch 16-byte pieces, each batch
  // loaded before any is used (one memory round trip a batch, not one a
  // chunk; groups of 128 take two). Rows past M are zeros.
  constexpr bool kStageX = !(kVariant & kBulkOmitXStaging);
  constexpr int kBatch = 8;
  const T* xg = static_cast<const T*>(a.x);
  const int x_groups = st_count * spr;
  const int x_pieces = a.group_size / 8; // of a group
  const int64_t k_lo = int64_t(st_begin) * k_per_stage;
  // Task u's group of x (row m = u / x_groups) as 16-byte pieces.
  auto x_group_src = [&](int m, int gi) {
    return reinterpret_cast<const uint4*>(xg + m * a.K + k_lo + gi * a.group_size);
  };
  auto load_x_batch = [&](const uint4* src, int m, int base, uint4(&raw)[kBatch]) {
#pragma unroll
    for (int q = 0; q < kBatch; ++q) {
      raw[q] = (m < a.M && base + q < x_pieces) ? src[base + q] : make_uint4(0u, 0u, 0u, 0u);
    }
  };
  // This thread's first batch is requested BEFORE the weights' copies: issued
  // after them, it queued behind them (~19 MB over the GPU on 14336x4096)
  // while every warp waited for x at the barrier below (1-3 us faster on the
  // benchmark shapes, ncu, session 8).
  uint4 x_first[kBatch];
  if constexpr (kStageX) {
    const int m = int(threadIdx.x) / x_groups;
    load_x_batch(x_group_src(m, int(threadIdx.x) - m * x_groups), m, 0, x_first);
  }

  if (lane == 0) {
    for (int i = 0; i < min(ring, total); ++i) {
      issue(i);
    }
  }
  stamp(7);

  // Stage this block's rows of x for its k part (while the first weights are
  // on their way): a group's values in fragment order, and X = their sum
  // (float32, kept as hi + lo halves).
  unsigned char* xs = smem + a.smem_x;
  T* xhi = reinterpret_cast<T*>(smem + a.smem_xsum);
  const int xsum_pitch = a.stages_per_part * spr; // elements a row of X
  T* xlo = xhi + kXRows * xsum_pitch;
  if constexpr (kStageX) {
    for (int u = threadIdx.x; u < kXRows * x_groups; u += blockDim.x) {
      const int m = u / x_groups;
      const int gi = u - m * x_groups;
      float sum = 0.f;
      const uint4* src = x_group_src(m, gi);
      for (int base = 0; base < x_pieces; base += kBatch) {
        uint4 raw[kBatch];
        if (u == int(threadIdx.x) && base == 0) {
#pragma unroll
          for (int q = 0; q < kBatch; ++q) {
            raw[q] = x_first[q];
          }
        } else {
          load_x_batch(src, m, base, raw);
        }
#pragma unroll
        for (int q0 = 0; q0 < kBatch; q0 += kPieces) {
          if (base + q0 < x_pieces) {
            const int kc = gi * a.group_size + (base + q0) * 8; // chunk's k in the k part
            uint32_t xr[V / 2];
#pragma unroll
            for (int q = 0; q < kPieces; ++q) {
              xr[4 * q + 0] = raw[q0 + q].x;
              xr[4 * q + 1] = raw[q0 + q].y;
              xr[4 * q + 2] = raw[q0 + q].z;
              xr[4 * q + 3] = raw[q0 + q].w;
            }
#pragma unroll
            for (int q = 0; q < V / 2; ++q) {
              const T* h = reinterpret_cast<const T*>(&xr[q]);
              sum += to_f<T>(h[0]) + to_f<T>(h[1]);
            }
            uint32_t xb[V / 2];
            x_pairs_in_chunk_order<bits>(xr, xb);
            const int step = kc / (4 * V);
            const int lc = (kc / V) % 4; // the lane c that multiplies this chunk
            unsigned char* dst = xs + m * a.x_pitch + step * kStepBytes + lc * kChunkBytes;
#pragma unroll
            for (int q = 0; q < kPieces; ++q) {
              *reinterpret_cast<uint4*>(dst + 16 * x_piece_slot<bits>(q, lc)) =
                  make_uint4(xb[4 * q], xb[4 * q + 1], xb[4 * q + 2], xb[4 * q + 3]);
            }
          }
        }
      }
      const T hi = from_f<T>(sum);
      xhi[m * xsum_pitch + gi] = hi;
      xlo[m * xsum_pitch + gi] = from_f<T>(sum - to_f<T>(hi));
    }
  }
  __syncthreads();
  if constexpr (kPush) {
    asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory");
  }
  stamp(2);

  constexpr int kAccFloats = MT * 4 * 32;
  // Split-K partial sums (a.split > 1). Default: tile lt's at lt * kAccFloats
  // of the block's own buffer, read by the owning rank after the cluster
  // barrier. kPush: rank q's sums of tile lt = r + split * j (owned by rank r)
  // go straight into rank r's buffer at (j * split + q) * kAccFloats.
  float* partials = reinterpret_cast<float*>(smem + a.smem_partials);
  T* out = static_cast<T*>(a.out);
  // Two accumulator sets (even and odd mmas of a chunk), added at the end of
  // a tile: a single chain of dependent mmas held every warp to its latency
  // (ncu: "stalled on a fixed-latency dependency" led).
  float acc[MT][4], acc2[MT][4];
#pragma unroll
  for (int t = 0; t < MT; ++t)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      acc[t][e] = 0.f;
      acc2[t][e] = 0.f;
    }

  for (int i = 0; i < total; ++i) {
    const int slot = i % ring;
    const int tl = i / st_count;
    const int si = i - tl * st_count; // stage within the k part
    mbar_wait(bars + 8 * slot, uint32_t((i / ring) & 1));
    if (i < kTraceMaxPairs) {
      stamp(kTraceHead + 2 * i);
    }
    if constexpr (!(kVariant & kBulkOmitMath)) {
      const unsigned char* sl = slots + slot * slot_bytes;
      const T* sc = reinterpret_cast<const T*>(sl + w_bytes);
      const T* bi = sc + 16 * spr;
#pragma unroll 2
      for (int j = 0; j < steps; ++j) {
        const int grp = (j * 4 * V + c * V) >> a.group_shift; // of this lane's chunk
        const unsigned char* chunk = sl + j * step_stride + g * row_stride + 16 * c;
        uint32_t frag[2][NI][2];
        dequant_scaled<T, bits>(*reinterpret_cast<const uint4*>(chunk), sc[g * spr + grp], frag[0]);
        dequant_scaled<T, bits>(
            *reinterpret_cast<const uint4*>(chunk + 8 * row_stride), sc[(g + 8) * spr + grp],
            frag[1]);
#pragma unroll
        for (int t = 0; t < MT; ++t) {
          const unsigned char* xrow = xs + (8 * t + g) * a.x_pitch +
              (si * steps + j) * kStepBytes + c * kChunkBytes;
          uint32_t xb[V / 2];
#pragma unroll
          for (int q = 0; q < kPieces; ++q) {
            const uint4 v = *reinterpret_cast<const uint4*>(xrow + 16 * x_piece_slot<bits>(q, c));
            xb[4 * q + 0] = v.x;
            xb[4 * q + 1] = v.y;
            xb[4 * q + 2] = v.z;
            xb[4 * q + 3] = v.w;
          }
#pragma unroll
          for (int ii = 0; ii < NI; ++ii)
            mma16816<T>(
                (ii & 1) ? acc2[t] : acc[t], frag[0][ii][0], frag[1][ii][0], frag[0][ii][1],
                frag[1][ii][1], xb[2 * ii], xb[2 * ii + 1]);
        }
      }
      // The stage's bias term: biases [16 rows][8 groups] x X [8 groups][8 rows of x].
      for (int h = 0; h < spr; h += 8) {
        const uint32_t a0 = *reinterpret_cast<const uint32_t*>(bi + g * spr + h + 2 * c);
        const uint32_t a1 = *reinterpret_cast<const uint32_t*>(bi + (g + 8) * spr + h + 2 * c);
#pragma unroll
        for (int t = 0; t < MT; ++t) {
          const int xi = (8 * t + g) * xsum_pitch + si * spr + h + 2 * c;
          mma1688<T>(acc[t], a0, a1, *reinterpret_cast<const uint32_t*>(xhi + xi));
          mma1688<T>(acc[t], a0, a1, *reinterpret_cast<const uint32_t*>(xlo + xi));
        }
      }
    }
    if (i < kTraceMaxPairs) {
      stamp(kTraceHead + 2 * i + 1);
    }
    // Every lane's reads of the slot are done (and ordered before the copy
    // engine's writes) before the slot is refilled (warp-uniform test).
    if (i + ring < total) {
      asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      __syncwarp();
      if (lane == 0) {
        issue(i + ring);
      }
    }
    if (si == st_count - 1) {
      // The tile is done: store it (one k part) or keep its partial sums.
      const int lt = warp + warps * tl; // tile within the block
      const int64_t n0 = int64_t(tile_begin + lt) * 16;
      float* push_dst = nullptr;
      if constexpr (kPush) {
        if (a.split > 1) {
          cg::cluster_group cluster = cg::this_cluster();
          push_dst = cluster.map_shared_rank(partials, lt % a.split) +
              ((lt / a.split) * a.split + int(cluster.block_rank())) * kAccFloats;
        }
      }
#pragma unroll
      for (int t = 0; t < MT; ++t)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float v = acc[t][e] + acc2[t][e];
          if (a.split > 1) {
            if constexpr (kPush) {
              push_dst[(t * 4 + e) * 32 + lane] = v;
            } else {
              partials[lt * kAccFloats + (t * 4 + e) * 32 + lane] = v;
            }
          } else {
            // c0, c1 -> (n = row g, m = 2c, 2c+1); c2, c3 -> (row g + 8).
            const int64_t n = n0 + g + 8 * (e / 2);
            const int64_t m = 8 * t + 2 * c + (e % 2);
            if (n < a.N && m < a.M) {
              out[m * a.N + n] = from_f<T>(v);
            }
          }
          acc[t][e] = 0.f;
          acc2[t][e] = 0.f;
        }
    }
  }

  stamp(3);

  // k parts: rank r of the cluster adds, in rank order, every rank's partial
  // sums of the block's tiles lt = r, r + split, ... and stores them.
  if (!(kVariant & kBulkOmitReduce) && a.split > 1) {
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();
    stamp(8);
    const int rank = int(cluster.block_rank());
    const int ntiles = tile_end - tile_begin;
    // All the block's threads share the rank's (tile, float) pairs, each
    // pair's remote reads issued before any is added, pairs of rows past M
    // or columns past N skipped (M = 1: 16 of a tile's 128). Session 7's loop
    // (one tile at a time, 128 of 512 threads, every pair read) cost 2-3.5
    // us of the 33 MB shapes' 22 (ncu_qmm_omit.py, session 8). kPush: every
    // rank's sums of the rank's tiles are in its own buffer already (rank
    // q's of tile lt at (lt - rank + q) * kAccFloats): local reads, the same
    // order of additions (the same output).
    constexpr int kMaxSplit = 8; // a portable cluster
    const int mine = (ntiles - rank + a.split - 1) / a.split; // tiles
    const float* rank_partials[kMaxSplit];
#pragma unroll
    for (int q = 0; q < kMaxSplit; ++q) {
      rank_partials[q] = kPush ? partials + q * kAccFloats
          : q < a.split        ? cluster.map_shared_rank(partials, q)
                               : partials;
    }
    for (int idx = threadIdx.x; idx < mine * kAccFloats; idx += blockDim.x) {
      const int lt = rank + a.split * (idx / kAccFloats);
      const int f = idx % kAccFloats;
      int64_t n, m;
      partial_coords(f, tile_begin + lt, n, m);
      if (n < a.N && m < a.M) {
        float part[kMaxSplit];
#pragma unroll
        for (int q = 0; q < kMaxSplit; ++q) {
          part[q] = q < a.split ? rank_partials[q][(kPush ? lt - rank : lt) * kAccFloats + f] : 0.f;
        }
        float v = 0.f;
#pragma unroll
        for (int q = 0; q < kMaxSplit; ++q) {
          if (q < a.split) {
            v += part[q];
          }
        }
        out[m * a.N + n] = from_f<T>(v);
      }
    }
    if constexpr (!kPush) {
      cluster.sync(); // no block leaves while another reads its partial sums
    }
  }
  stamp(4);
  if constexpr (kTrace) {
    if (trace) {
      trace[5] = global_ns();
    }
  }
#endif
}

// ---------------------------------------------------------------------------
// SIMT paths (float32-exact).
struct SimtArgs {
  const uint32_t* w;
  const void* scales;
  const void* biases;
  const void* x;
  void* out;
  int64_t M, N, K;
  int group_size;
};

// The 128 / bits values of one 16-byte chunk as float32 q * s + b (the SIMT
// kernels' dequantization).
template <int bits>
__device__ __forceinline__ void dequant_chunk_f32(uint4 raw, float s, float b, float (&wf)[128 / bits]) {
  const uint32_t wv[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int j = 0; j < 128 / bits; ++j) {
    const uint32_t q = (wv[j / (32 / bits)] >> ((j % (32 / bits)) * bits)) &
        ((1u << bits) - 1);
    wf[j] = fmaf(float(q), s, b);
  }
}

// The sum of v over the warp's lanes, in every lane.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, o);
  }
  return v;
}

// transpose=true: one warp per weight row, 8 rows of x per blockIdx.y.
template <typename T, int bits>
__global__ void __launch_bounds__(256) simt_qmm_kernel(SimtArgs a) {
  constexpr int V = 128 / bits;
  const int lane = threadIdx.x % 32;
  const int64_t n = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  const int64_t m0 = int64_t(blockIdx.y) * 8;
  if (n >= a.N) {
    return;
  }
  const T* x = static_cast<const T*>(a.x);
  const T* scales = static_cast<const T*>(a.scales);
  const T* biases = static_cast<const T*>(a.biases);
  const int64_t groups = a.K / a.group_size;
  const uint4* wrow = reinterpret_cast<const uint4*>(a.w + n * (a.K * bits / 32));
  const int64_t chunks = a.K / V;
  float acc[8];
#pragma unroll
  for (int m = 0; m < 8; ++m) acc[m] = 0.f;
  for (int64_t ch = lane; ch < chunks; ch += 32) {
    const uint4 raw = __ldg(wrow + ch);
    const int64_t grp = ch * V / a.group_size;
    const float s = to_f<T>(scales[n * groups + grp]);
    const float b = to_f<T>(biases[n * groups + grp]);
    float wf[V];
    dequant_chunk_f32<bits>(raw, s, b, wf);
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      if (m0 + m < a.M) {
        const T* xr = x + (m0 + m) * a.K + ch * V;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < V; ++j) sum = fmaf(wf[j], to_f<T>(xr[j]), sum);
        acc[m] += sum;
      }
    }
  }
#pragma unroll
  for (int m = 0; m < 8; ++m) {
    const float v = warp_sum(acc[m]);
    if (lane == 0 && m0 + m < a.M) {
      static_cast<T*>(a.out)[(m0 + m) * a.N + n] = from_f<T>(v);
    }
  }
}

// simt_qmv (QmmKernel::kSimtSmallM; float16/bfloat16 x, M <= kSimtSmallMMaxRows
// = R, the plan's M = 1 by default): one warp per weight row, 8 a block; lane c
// takes the row's 16-byte chunks c, c + 32, ... (a chunk lies in one
// quantization group: group_size >= 32 >= V), U = kSimtSmallMUnroll of them
// at a time. For each, its scale and bias and the R rows' matching pieces of
// x (16-byte loads) are requested before any is used, so K <= 32 U V takes
// one memory round trip. float32 math (q * s + b, then the dot product); a
// warp butterfly adds the lanes; lane 0 stores the R outputs.
template <typename T, int bits>
__global__ void __launch_bounds__(256) simt_qmv_kernel(SimtArgs a) {
  constexpr int V = 128 / bits; // values a chunk
  constexpr int P = V / 8; // 16-byte pieces of x a chunk and row
  constexpr int R = kSimtSmallMMaxRows;
  constexpr int U = kSimtSmallMUnroll;
  const int lane = threadIdx.x % 32;
  const int64_t n = int64_t(blockIdx.x) * 8 + threadIdx.x / 32;
  if (n >= a.N) {
    return; // a whole warp
  }
  const T* x = static_cast<const T*>(a.x);
  const T* scales = static_cast<const T*>(a.scales);
  const T* biases = static_cast<const T*>(a.biases);
  const int64_t groups = a.K / a.group_size;
  const int group_shift = __ffs(a.group_size) - 1; // group sizes are powers of two
  const uint4* wrow = reinterpret_cast<const uint4*>(a.w + n * (a.K * bits / 32));
  const int64_t chunks = a.K / V;
  float acc[R] = {};
  for (int64_t c0 = lane; c0 < chunks; c0 += 32 * U) {
    uint4 raw[U];
    float s[U], b[U];
    uint4 xv[U][R][P];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t ch = c0 + 32 * u;
      if (ch < chunks) {
        raw[u] = __ldg(wrow + ch);
        const int64_t g = n * groups + ((ch * V) >> group_shift);
        s[u] = to_f<T>(scales[g]);
        b[u] = to_f<T>(biases[g]);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          if (r < a.M) {
            const uint4* xr = reinterpret_cast<const uint4*>(x + r * a.K + ch * V);
#pragma unroll
            for (int q = 0; q < P; ++q) {
              xv[u][r][q] = __ldg(xr + q);
            }
          }
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (c0 + 32 * u < chunks) {
        float wf[V];
        dequant_chunk_f32<bits>(raw[u], s[u], b[u], wf);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          if (r < a.M) {
            const T* xe = reinterpret_cast<const T*>(xv[u][r]);
            float sum = 0.f;
#pragma unroll
            for (int j = 0; j < V; ++j) {
              sum = fmaf(wf[j], to_f<T>(xe[j]), sum);
            }
            acc[r] += sum;
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float v = warp_sum(acc[r]);
    if (lane == 0 && r < a.M) {
      static_cast<T*>(a.out)[r * a.N + n] = from_f<T>(v);
    }
  }
}

// transpose=false: one thread per packed word of a weight row, 8 rows of x.
template <typename T, int bits>
__global__ void __launch_bounds__(128) simt_qmm_nt_kernel(SimtArgs a) {
  constexpr int PW = 32 / bits;
  const int64_t words = a.N / PW;
  const int64_t wc = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t m0 = int64_t(blockIdx.y) * 8;
  if (wc >= words) {
    return;
  }
  const T* x = static_cast<const T*>(a.x);
  const T* scales = static_cast<const T*>(a.scales);
  const T* biases = static_cast<const T*>(a.biases);
  const int64_t groups = a.N / a.group_size;
  const int64_t grp = wc * PW / a.group_size;
  const int rows = int(a.M - m0 < 8 ? a.M - m0 : 8);
  float acc[8][PW];
#pragma unroll
  for (int m = 0; m < 8; ++m)
#pragma unroll
    for (int j = 0; j < PW; ++j) acc[m][j] = 0.f;
  for (int64_t k = 0; k < a.K; ++k) {
    const uint32_t word = __ldg(a.w + k * words + wc);
    const float s = to_f<T>(scales[k * groups + grp]);
    const float b = to_f<T>(biases[k * groups + grp]);
    float wf[PW];
#pragma unroll
    for (int j = 0; j < PW; ++j) {
      wf[j] = fmaf(float((word >> (j * bits)) & ((1u << bits) - 1)), s, b);
    }
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      if (m < rows) {
        const float xv = to_f<T>(x[(m0 + m) * a.K + k]);
#pragma unroll
        for (int j = 0; j < PW; ++j) acc[m][j] = fmaf(xv, wf[j], acc[m][j]);
      }
    }
  }
  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int m = 0; m < 8; ++m) {
    if (m < rows) {
#pragma unroll
      for (int j = 0; j < PW; ++j) out[(m0 + m) * a.N + wc * PW + j] = from_f<T>(acc[m][j]);
    }
  }
}

// ---------------------------------------------------------------------------
// Host side
// A kernel launched as thread-block clusters of `cluster_x` blocks along x.
//
// Not a plain kernel node of MLX's graph: MLX caches instantiated graphs by
// node types and edges and updates a cached one in place
// (cudaGraphExecUpdate), and an update does not carry a kernel node's cluster
// shape over. A plain node with clusters would leave its cluster shape at that
// position of the cached graph, so a later kernel there (ours with another
// split, or any of MLX's own) would launch with the wrong clusters: it fails
// to launch (output never written) or reduces the wrong blocks. This was the
// cause of the all-NaN outputs and worker crashes of the first H200 test runs.
// A child graph node instead gets a key with its cluster shape
// ("(K<x>)", subgraph_to_key in MLX), so it is only ever updated from a node of
// the same cluster shape. Clusters are along x: MLX treats a child graph with
// clusters along y or z as not updatable (re-instantiated every commit).
void add_cluster_node(
    mx::cu::CommandEncoder& enc, CUfunction fn, dim3 grid, dim3 block,
    unsigned cluster_x, void** params, unsigned shared_bytes = 0) {
  // One reusable one-node graph per cluster size: add_graph_node copies
  // (clones) it into MLX's graph, so it can be rewritten for the next op. Per
  // size, because the node's cluster shape must divide the grid at every
  // cuGraphKernelNodeSetParams ("cluster misconfiguration" otherwise: the
  // bench's first H200 run, a split 4 after a split 8); grid.x == cluster_x.
  constexpr unsigned kMaxCluster = 8;
  if (cluster_x < 2 || cluster_x > kMaxCluster || grid.x % cluster_x != 0) {
    throw std::runtime_error("mlx_kernels CUDA: bad cluster shape");
  }
  static std::mutex mu;
  static CUgraph graphs[kMaxCluster + 1] = {};
  static CUgraphNode nodes[kMaxCluster + 1] = {};
  std::lock_guard<std::mutex> lock(mu);
  CUgraph& child = graphs[cluster_x];
  CUgraphNode& node = nodes[cluster_x];
  CUDA_KERNEL_NODE_PARAMS kp{};
  kp.func = fn;
  kp.gridDimX = grid.x;
  kp.gridDimY = grid.y;
  kp.gridDimZ = grid.z;
  kp.blockDimX = block.x;
  kp.blockDimY = block.y;
  kp.blockDimZ = block.z;
  kp.sharedMemBytes = shared_bytes;
  kp.kernelParams = params;
  CUlaunchAttributeValue attr{};
  attr.clusterDim.x = cluster_x;
  attr.clusterDim.y = 1;
  attr.clusterDim.z = 1;
  if (child == nullptr) {
    check_cu(cuGraphCreate(&child, 0), "cuGraphCreate");
    check_cu(cuGraphAddKernelNode(&node, child, nullptr, 0, &kp), "cuGraphAddKernelNode");
    check_cu(
        cuGraphKernelNodeSetAttribute(node, CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION, &attr),
        "cuGraphKernelNodeSetAttribute(cluster)");
  } else {
    check_cu(cuGraphKernelNodeSetParams(node, &kp), "cuGraphKernelNodeSetParams");
  }
  enc.add_graph_node(reinterpret_cast<cudaGraph_t>(child));
}

// The kernels that take TcArgs: tc_qmm (a cluster along x when split_k > 1)
// and tc_qmm_kslice (no split across blocks).
template <typename T, int bits>
void launch_tc(
    mx::cu::CommandEncoder& enc, const QmmPlan& plan, const TcArgs& args) {
  const void* k = nullptr;
  if (plan.kernel == QmmKernel::kTensorCoreKSlice) {
    k = plan.m_tiles == 1 ? (const void*)tc_qmm_kslice_kernel<T, bits, 1>
                          : (const void*)tc_qmm_kslice_kernel<T, bits, 2>; // split_k 1: a plain node below
  }
  // Exactly the variants of kTcVariants (qmm_plan.h).
#define MK_TC(RT, MT)                                                          \
  static_assert(tc_variant_compiled(RT, MT));                                  \
  if (plan.kernel == QmmKernel::kTensorCore && plan.row_tiles == RT && plan.m_tiles == MT) \
    k = plan.mma_order == kTcInterleavedTail ? (const void*)tc_qmm_kernel<T, bits, RT, MT, kTcInterleavedTail> \
        : plan.mma_order == kTcInterleaved   ? (const void*)tc_qmm_kernel<T, bits, RT, MT, kTcInterleaved>     \
                                             : (const void*)tc_qmm_kernel<T, bits, RT, MT, kTcChained>;
  MK_TC(1, 1) MK_TC(2, 1) MK_TC(1, 2) MK_TC(2, 2) MK_TC(1, 4) MK_TC(1, 8)
#undef MK_TC
  if (!k) {
    throw std::runtime_error("mlx_kernels CUDA: no tensor-core kernel for this plan");
  }
  TcArgs a = args;
  void* params[] = {&a};
  const dim3 grid(unsigned(plan.grid[0]), unsigned(plan.grid[1]), unsigned(plan.grid[2]));
  if (plan.split_k <= 1) {
    enc.add_kernel_node_raw(func_of(k), grid, dim3(plan.block), dim3(), 0, params);
  } else {
    add_cluster_node(enc, func_of(k), grid, dim3(plan.block), unsigned(plan.split_k), params);
  }
}

// The three tensor maps of the bulk kernel (see BulkArgs). The weights are a
// 3-D uint8 view of 64-byte pieces: the step-major view (64 B, N, pieces),
// whose strides do not grow with the dimension, where the driver accepts it
// (bank-conflict-free reads), else the row-major (64 B, pieces, N).
template <typename T>
void encode_bulk_maps(
    BulkArgs& ba, const QmmPlan& plan, const QmmParams& p, const mx::array& w,
    const mx::array& s, const mx::array& b) {
  const cuuint64_t row_total = cuuint64_t(p.K) * p.bits / 8;
  const cuuint64_t pieces = row_total / 64;
  const cuuint32_t steps = cuuint32_t(plan.row_bytes / 64);
  const void* wp = dev_ptr<void>(w);
  const cuuint64_t sm_dims[3] = {64, cuuint64_t(p.N), pieces};
  const cuuint64_t sm_strides[2] = {row_total, 64};
  const cuuint32_t sm_box[3] = {64, 16, steps};
  const cuuint64_t rm_dims[3] = {64, pieces, cuuint64_t(p.N)};
  const cuuint64_t rm_strides[2] = {64, row_total};
  const cuuint32_t rm_box[3] = {64, steps, 16};
  ba.step_major = encode_tensor_map(
      &ba.w_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, wp, sm_dims, sm_strides, sm_box,
      CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
  const bool w_ok = ba.step_major ||
      encode_tensor_map(
          &ba.w_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, wp, rm_dims, rm_strides, rm_box,
          CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
  const cuuint64_t groups = cuuint64_t(p.K / p.group_size);
  const cuuint64_t s_dims[2] = {groups, cuuint64_t(p.N)};
  const cuuint64_t s_strides[1] = {groups * sizeof(T)};
  const cuuint32_t s_box[2] = {cuuint32_t(plan.k_step / p.group_size), 16};
  const auto encode_groups = [&](CUtensorMap* map, const mx::array& a) {
    return encode_tensor_map(
        map, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, dev_ptr<void>(a), s_dims, s_strides, s_box,
        CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_NONE);
  };
  if (!w_ok || !encode_groups(&ba.s_map, s) || !encode_groups(&ba.b_map, b)) {
    throw std::runtime_error("mlx_kernels CUDA: cuTensorMapEncodeTiled refused a quantized_matmul map");
  }
}

// The bulk kernel or its push-partials candidate, for every x type and bit
// width; the omit and trace variants (measurement only, qmm_plan.h) for
// float16 x and 4-bit weights only, the trace also with the candidate.
template <typename T, int bits, int MT, int... kVariants>
const void* bulk_kernel_for(int variant, std::integer_sequence<int, kVariants...>) {
  const void* k = nullptr;
  ((variant == kVariants ? (k = (const void*)tc_qmm_bulk_kernel<T, bits, MT, kVariants>)
                         : nullptr),
   ...);
  return k;
}

template <typename T, int bits>
const void* bulk_kernel(const QmmPlan& plan, int omit, bool trace) {
  using Variants = std::conditional_t<
      std::is_same_v<T, __half> && bits == 4,
      std::integer_sequence<int, 0, 1, 2, 3, 4, 5, 6, 7, kBulkTrace, kBulkPushPartials,
                            kBulkPushPartials | kBulkTrace>,
      std::integer_sequence<int, 0, kBulkPushPartials>>;
  static_assert(kBulkOmitAll == 7 && kBulkTrace == 8 && kBulkPushPartials == 32);
  const int variant =
      omit | (trace ? kBulkTrace : 0) | (plan.push_partials ? kBulkPushPartials : 0);
  const void* k = plan.m_tiles == 1 ? bulk_kernel_for<T, bits, 1>(variant, Variants{})
                                    : bulk_kernel_for<T, bits, 2>(variant, Variants{});
  if (!k) {
    throw std::runtime_error(
        "mlx_kernels CUDA: the bulk kernel's omit and trace variants (measurement only) exist "
        "for float16 x and 4-bit weights only, not both at once, and not omits with the "
        "push-partials candidate");
  }
  return k;
}

// The trace variant's record (kTraceWords words a warp, kBulkWarps warps a
// block, at most kTraceMaxBlocks blocks), allocated at the first traced
// launch and kept; the grid of the last traced launch.
struct BulkTrace {
  std::mutex mutex;
  unsigned long long* words = nullptr;
  int grid_x = 0, grid_y = 0;
};

BulkTrace& bulk_trace() {
  static BulkTrace t;
  return t;
}

unsigned long long* bulk_trace_for_launch(const QmmPlan& plan) {
  BulkTrace& t = bulk_trace();
  std::lock_guard<std::mutex> lock(t.mutex);
  if (plan.grid[0] * plan.grid[1] * plan.grid[2] > kTraceMaxBlocks) {
    throw std::runtime_error(
        "mlx_kernels CUDA: the bulk trace holds at most " + std::to_string(kTraceMaxBlocks) +
        " blocks");
  }
  const size_t bytes = size_t(kTraceMaxBlocks) * kBulkWarps * kTraceWords * 8;
  if (!t.words) {
    check_cuda(cudaMalloc(&t.words, bytes), "cudaMalloc (bulk trace)");
    check_cuda(cudaMemset(t.words, 0, bytes), "cudaMemset (bulk trace)");
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize (bulk trace)");
  }
  t.grid_x = int(plan.grid[0]);
  t.grid_y = int(plan.grid[1]);
  return t.words;
}

template <typename T, int bits>
void launch_bulk(mx::cu::CommandEncoder& enc, const QmmPlan& plan, const BulkArgs& args) {
  const bool trace = qmm_bulk_trace();
  const void* k = bulk_kernel<T, bits>(plan, qmm_bulk_omit(), trace);
  BulkArgs a = args;
  a.trace = trace ? bulk_trace_for_launch(plan) : nullptr;
  void* params[] = {&a};
  const dim3 grid(unsigned(plan.grid[0]), unsigned(plan.grid[1]), unsigned(plan.grid[2]));
  // Opted in to the most any plan asks for (the plan keeps below it).
  const CUfunction fn = func_of(k, kBulkMaxSmem);
  const unsigned smem = unsigned(plan.smem_bytes);
  if (plan.split_k <= 1) {
    enc.add_kernel_node_raw(fn, grid, dim3(plan.block), dim3(), smem, params);
  } else {
    add_cluster_node(enc, fn, grid, dim3(plan.block), unsigned(plan.split_k), params, smem);
  }
}

// How many clusters of s = 1..8 bulk-kernel blocks (one an SM) the device
// runs at once, asked of the driver once (a GPC whose SM count is no multiple
// of s leaves SMs idle, so this can be less than num_sms / s).
const int* bulk_cluster_capacity() {
  static int cap[kMaxClusterTable] = {};
  static std::once_flag once;
  std::call_once(once, [] {
    const CUfunction fn =
        func_of((const void*)tc_qmm_bulk_kernel<__half, 4, 1>, kBulkMaxSmem);
    for (int s = 1; s < kMaxClusterTable; ++s) {
      CUlaunchAttribute attr{};
      attr.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
      attr.value.clusterDim.x = unsigned(s);
      attr.value.clusterDim.y = 1;
      attr.value.clusterDim.z = 1;
      CUlaunchConfig cfg{};
      cfg.gridDimX = unsigned(s);
      cfg.gridDimY = 1;
      cfg.gridDimZ = 1;
      cfg.blockDimX = 32 * kBulkWarps;
      cfg.blockDimY = 1;
      cfg.blockDimZ = 1;
      cfg.sharedMemBytes = kBulkMaxSmem;
      cfg.attrs = &attr;
      cfg.numAttrs = 1;
      int n = 0;
      check_cu(cuOccupancyMaxActiveClusters(&n, fn, &cfg), "cuOccupancyMaxActiveClusters");
      cap[s] = n > 0 ? n : std::max(1, num_sms() / s);
    }
  });
  return cap;
}

// The fields TcArgs and BulkArgs share: x, out, the problem sizes and the
// group size (and its log2: group sizes are 32, 64 or 128).
template <typename Args>
void set_io(Args& a, const QmmParams& p, const mx::array& x, mx::array& out) {
  a.x = dev_ptr<void>(x);
  a.out = dev_ptr<void>(out);
  a.M = p.M;
  a.N = p.N;
  a.K = p.K;
  a.group_size = p.group_size;
  a.group_shift = p.group_size == 32 ? 5 : p.group_size == 64 ? 6 : 7;
}

template <typename T>
void dispatch(
    mx::cu::CommandEncoder& enc, const QmmPlan& plan, const QmmParams& p,
    const mx::array& x, const mx::array& w, const mx::array& s,
    const mx::array& b, mx::array& out, std::vector<mx::array>& temps) {
  // The one kernel node this adds reads x, w, s, b and writes out.
  const auto register_io = [&] {
    enc.set_input_array(x);
    enc.set_input_array(w);
    enc.set_input_array(s);
    enc.set_input_array(b);
    enc.set_output_array(out);
  };
  if (plan.kernel == QmmKernel::kTensorCoreBulk) {
    if constexpr (!std::is_same_v<T, float>) {
      BulkArgs ba{};
      encode_bulk_maps<T>(ba, plan, p, w, s, b);
      set_io(ba, p, x, out);
      ba.row_bytes = plan.row_bytes;
      ba.groups_per_stage = int(plan.k_step / p.group_size);
      ba.stages = int(plan.num_steps);
      ba.stages_per_part = int(plan.steps_per_split);
      ba.split = plan.split_k;
      ba.tiles = int((p.N + 15) / 16);
      ba.tiles_per_block = plan.tiles_per_block;
      ba.ring = plan.ring;
      ba.x_pitch = plan.x_pitch;
      ba.smem_x = plan.smem_x;
      ba.smem_xsum = plan.smem_xsum;
      ba.smem_partials = plan.smem_partials;
      ba.smem_ring = plan.smem_ring;
      register_io();
      (p.bits == 4 ? launch_bulk<T, 4> : launch_bulk<T, 8>)(enc, plan, ba);
      return;
    }
  }
  if (plan.kernel == QmmKernel::kTensorCore || plan.kernel == QmmKernel::kTensorCoreKSlice) {
    if constexpr (!std::is_same_v<T, float>) {
      const int64_t mt_total = (p.M + 7) / 8;
      TcArgs ta{};
      ta.w = dev_ptr<uint32_t>(w);
      ta.scales = dev_ptr<void>(s);
      ta.biases = dev_ptr<void>(b);
      set_io(ta, p, x, out);
      ta.groups = p.K / p.group_size;
      ta.num_steps = plan.num_steps;
      ta.steps_per_split = plan.steps_per_split;
      ta.mt_total = mt_total;
      ta.split = plan.split_k;
      register_io();
      (p.bits == 4 ? launch_tc<T, 4> : launch_tc<T, 8>)(enc, plan, ta);
      return;
    }
  }
  SimtArgs sa{dev_ptr<uint32_t>(w), dev_ptr<void>(s), dev_ptr<void>(b), dev_ptr<void>(x),
              dev_ptr<void>(out), p.M, p.N, p.K, p.group_size};
  register_io();
  const void* k;
  if (plan.kernel == QmmKernel::kSimt) {
    k = p.bits == 4 ? (const void*)simt_qmm_kernel<T, 4> : (const void*)simt_qmm_kernel<T, 8>;
  } else if (plan.kernel == QmmKernel::kSimtSmallM) {
    if constexpr (std::is_same_v<T, float>) {
      throw std::runtime_error("mlx_kernels CUDA: simt_qmv takes float16 / bfloat16 x");
    } else {
      k = p.bits == 4 ? (const void*)simt_qmv_kernel<T, 4> : (const void*)simt_qmv_kernel<T, 8>;
    }
  } else {
    k = p.bits == 4 ? (const void*)simt_qmm_nt_kernel<T, 4>
                    : (const void*)simt_qmm_nt_kernel<T, 8>;
  }
  add_node(
      enc, k, dim3(unsigned(plan.grid[0]), unsigned(plan.grid[1]), unsigned(plan.grid[2])),
      plan.block, 0, sa);
}

} // namespace

std::vector<int> bulk_cluster_capacities() {
  const int* cap = bulk_cluster_capacity();
  return std::vector<int>(cap + 1, cap + kMaxClusterTable);
}

BulkTraceRecord read_bulk_trace() {
  BulkTrace& t = bulk_trace();
  std::lock_guard<std::mutex> lock(t.mutex);
  BulkTraceRecord r;
  r.grid_x = t.grid_x;
  r.grid_y = t.grid_y;
  r.warps = kBulkWarps;
  r.words_per_warp = kTraceWords;
  r.head_words = kTraceHead;
  r.max_pairs = kTraceMaxPairs;
  if (!t.words || t.grid_x * t.grid_y == 0) {
    return r; // no traced launch yet: no words
  }
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize (bulk trace)");
  r.words.resize(size_t(t.grid_x) * t.grid_y * kBulkWarps * kTraceWords);
  check_cuda(
      cudaMemcpy(r.words.data(), t.words, r.words.size() * 8, cudaMemcpyDeviceToHost),
      "cudaMemcpy (bulk trace)");
  check_cuda(cudaMemset(t.words, 0, r.words.size() * 8), "cudaMemset (bulk trace)");
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize (bulk trace)");
  return r;
}

void quantized_matmul(
    const mx::array& x_in, const mx::array& w_in, const mx::array& s_in,
    const mx::array& b_in, mx::array& out, const QmmParams& p,
    const mx::Stream& stream) {
  auto& enc = mx::cu::get_command_encoder(stream);
  out.set_data(device_data(out.nbytes(), enc));
  std::vector<mx::array> temps;

  poison_output(enc, out);

  const bool is_f32 = x_in.dtype() == mx::float32;
  const int sms = qmm_plan_sms(num_sms());
  // The driver's cluster capacity holds for this device only, not for a test's
  // plan SM count.
  const QmmPlan plan =
      plan_cuda_qmm(p, is_f32, sms, sms == num_sms() ? bulk_cluster_capacity() : nullptr);
  if (plan.grid[1] > 65535 || plan.grid[2] > 65535) {
    throw std::runtime_error("mlx_kernels CUDA: quantized_matmul problem too large for one launch");
  }
  if (plan.kernel != QmmKernel::kNone) {
    mx::array x = aligned_rows(x_in, enc, temps);
    mx::array w = aligned_rows(w_in, enc, temps);
    mx::array s = aligned_rows(s_in, enc, temps);
    mx::array b = aligned_rows(b_in, enc, temps);
    if (x.dtype() == mx::float16) {
      dispatch<__half>(enc, plan, p, x, w, s, b, out, temps);
    } else if (x.dtype() == mx::bfloat16) {
      dispatch<__nv_bfloat16>(enc, plan, p, x, w, s, b, out, temps);
    } else {
      dispatch<float>(enc, plan, p, x, w, s, b, out, temps);
    }
  }
  for (auto& t : temps) {
    enc.add_temporary(t);
  }
}

} // namespace mlx_kernels::cuda
