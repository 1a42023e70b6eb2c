// CUDA kernels of flash_attention: out = softmax(scale * q k^T + mask) v.
//
// Data layout and semantics (those of metal/flash_attention.metal):
//   q [B, Hq, qL, D], k and v [B, Hkv, kL, D], out [B, Hq, qL, D], one dtype
//   T (float32, float16 or bfloat16), rows contiguous and 16-byte aligned (the
//   host gathers them otherwise). Query head h reads KV head h / (Hq / Hkv).
//   Array masks are read in place through four strides of the view
//   [B, Hq, qL, kL] (zero on broadcast axes): bool bytes (true = attend) or
//   additive (T). Causal: query i sees keys j <= i + kL - qL.
//   All softmax arithmetic is float32, in the exp2 domain (scores times
//   scale * log2(e), an additive mask times log2(e)). A masked score (bool,
//   causal) is the lowest float32, as MLX's finfo.min: a row with every key
//   masked averages v. Keys past kL weigh exactly 0. An additive -inf over a
//   whole row gives NaN, and kL = 0 gives zeros, as MLX.
//
// The plan (attn_plan.cpp) picks one of, all with blocks of 128 threads and a
// 1-D grid whose block index maps to work through decode_work / prefill_work
// (attn_plan.h):
//
// attn_decode_kernel<T, D, RT>  (qL <= 8, float32; T = float only)
//   A block serves RT rows (the (query head, query) pairs of one KV head's
//   GQA group, RT = 1, 2, 4 or 8) over one split of the keys, so each K and V
//   row is read once per block for all RT rows. Lanes: a key's row of D
//   elements is cut into D / 8 chunks of 8 elements (one 16-byte load for
//   2-byte T, two for float32); LPK = 8, 16 or 32 consecutive lanes (the next
//   power of two of D / 8; lanes past D / 8 idle on loads) hold one key, so a
//   warp holds KPW = 32 / LPK keys at a time. Each warp loop iteration loads
//   U (4, or 2 when RT = 8) keys per lane group, K and V chunks at once (loads
//   in flight), then: partial dot products with the float32 query rows (from
//   shared memory), a butterfly sum over the LPK lanes (__shfl_xor_sync),
//   mask, online softmax per lane (max, sum, accumulator of its 8 columns for
//   each row), acc += p * v. The 4 warps take interleaved groups of
//   KPW * U keys. At the end the lane groups of a warp are combined by
//   shuffles and the 4 warps through shared memory. One split: the block
//   writes out; several: it writes float32 partials (max, sum, unnormalized
//   accumulator) and attn_merge_kernel combines them.
//   Shared memory (static): q rows RT * D floats + warp accumulators
//   4 * RT * D floats + maxima and sums: at most 40.3 KB (RT = 8, D = 256).
//
// attn_decode_mma_kernel<T, D, MT>  (qL <= 8, float16 / bfloat16)
//   A block serves BR = 16 * MT rows (MT = 1, 2 or 4; the (query head, query)
//   rows of one KV head's GQA group, as attn_decode_kernel: up to 64 rows, so
//   each K / V row is read once per (batch, KV head, split) for G * qL <= 64
//   rows) over one split of the keys, on tensor cores (mma.sync.m16n8k16,
//   the fragment layout of the prefill kernel below). Warp w: row tile
//   mt = w % MT (block rows 16 mt .. 16 mt + 15, the M side), key group
//   kg = w / MT of KG = 4 / MT. Keys go by tiles of BK = 64 (the N side of
//   S = Q K^T, the K side of P V); warp (mt, kg) takes keys
//   KW kg .. KW kg + KW - 1 of each tile, KW = BK / KG = 16, 32 or 64, and
//   keeps its own online softmax (m, l) and O [16][D] (float32 accumulators,
//   D / 2 a thread). Rows past `rows` are zeros (computed, never written).
//   Shared memory (dynamic, opted in above 48 KB): Q [BR][D + 8] and two
//   stages of K, V [BK][D + 8] in T (rows padded by 16 bytes for ldmatrix),
//   filled by cp.async (keys past the split zero-filled): tile t + 1 loads
//   while tile t is computed (one __syncthreads before and one after each
//   tile). Masking as in prefill: keys past the split are -inf (weight 0);
//   only tiles that hold such keys, cross the causal diagonal (keys past
//   kL - qL) or have an array mask go through the per-element mask. At the
//   end the warps write (m, l, O) to shared memory (over the K / V stages,
//   [4][16][D] + [4][16][2] floats) and the block combines the KG key groups
//   of each row: one thread a row works out the row's max, the groups'
//   weights, its sum and its output row; then each thread takes 4 adjacent
//   columns of a row at a time and writes out (one split) or a float4 of
//   float32 partials for attn_merge_kernel (the layout of attn_decode_kernel).
//   D = 128: Q 4.3 / 8.7 / 17.4 KB + stages 69.6 KB = 74-87 KB (2-3 blocks an
//   SM); D = 256: 143-169 KB (one block). Registers (ptxas, sm_90): D = 128:
//   140 / 169 / 190 for MT = 1 / 2 / 4, no spills.
//
// attn_merge_kernel<T>  (decode with splits > 1)
//   One block per output row (b, query head, query): M = max of the splits'
//   maxima; warp w sums the splits w, w + 4, ... weighted by exp2(m_s - M)
//   (lanes over D in float4; split w's loads issued before M is known); the
//   warps add up through shared memory; out = acc / sum.
//
// attn_merge_wide_kernel<T>  (decode with many splits and few rows: the
//   plan's use_merge_wide) The same combination with fewer dependent rounds
//   of global loads: one block of 8 warps per output row; warp w takes the
//   splits w, w + 8, ... in batches of 8, every load of a batch (m, l and the
//   row of acc, lanes over D in float4) issued before the first is used, and
//   keeps its own running max, rescaling its sums when a batch raises it; the
//   warps' (max, sum, acc) are then combined through shared memory.
//   attn_merge_kernel reads all maxima first, then 4 splits at a time a
//   warp: at the 43-47 splits of B = 1 and kL 16k-32k about five rounds:
//   7.8-8.7 us under ncu on the H200 (session 17), where MLX's whole
//   reduction took 3.9-4.4; on the H100 (session 19) 8.0-8.6 us against this
//   kernel's 3.8-4.0.
//
// attn_prefill_mma_kernel<T, D>  (qL > 8, float16 / bfloat16)
//   A block owns BQ consecutive queries of one (batch, query head): BQ = 128
//   for D <= 128, 64 for D = 256. Warp w owns the WR = BQ / 4 queries
//   WR w .. WR w + WR - 1, as MT = WR / 16 row tiles of 16 (MT = 2, or 1 for
//   D = 256: D accumulators a thread would not fit the registers). Per tile
//   of BK keys (64 for D = 64, else 32: registers): S = Q K^T and O += P V with
//   mma.sync.m16n8k16 (T operands, float32 accumulators), each K / V fragment
//   loaded from shared memory (ldmatrix) once for the warp's MT row tiles;
//   online softmax on the S accumulators in registers (exp2 on MUFU.EX2,
//   ex2.approx.ftz). Tiles without a mask keep raw scores: the row max is
//   taken on them and the scale goes into the exponent, p = 2^(s * qscale -
//   m), one FFMA a score (qscale > 0; masked tiles and a scale <= 0 scale
//   first). A row's running max m moves only when a tile's max passes it by
//   more than kMaxSlack = 8 (p <= 2^8; O and l share m, so a stale m is
//   exact), and O is rescaled only when some row max of the warp moved. P
//   is rounded to T in registers as the A operand of P V (no shared memory).
//   Shared memory (dynamic, opted in above 48 KB): Q [BQ][D + 8] and two
//   stages of K and V [BK][D + 8] in T (rows padded by 16 bytes: ldmatrix
//   rows hit distinct banks), filled by cp.async (rows past qL / kL
//   zero-filled): D = 128: 68 KB, D = 256: 99 KB. Registers (ptxas, sm_90,
//   CUDA 13.0, float16 = bfloat16): D = 64 / 80 / 96 / 128 / 256: 254 / 197 /
//   227 / 248 / 233, no spills: two blocks (8 warps) an SM (64-key tiles at
//   D = 128 spill 468 bytes). Tile
//   t + 1 (K and V, one cp.async group) is issued into the other stage right
//   after the one barrier of tile t and waited for at the top of tile t + 1:
//   its loads overlap all of tile t's math. Causal: the key loop stops at the
//   block's last visible key (prefill_key_end); only tiles with padding keys,
//   tiles crossing the diagonal for some row of the warp (keys past the
//   warp's first query's last key) and array masks go through the
//   per-element mask; a warp whose rows all see some key skips the tiles
//   past its last row's last key (on the block's diagonal; their weights
//   would be exactly 0). Grid: heavy query tiles first across all heads
//   (prefill_work; the Hq / Hkv heads of a GQA group are adjacent, so their
//   K / V tiles are read close together in time).
//   Fragment layout (g = lane / 4, c = lane % 4; PTX m16n8k16):
//     A (16 x 16, row-major), 4 regs of 2 elements: a0 = (g, 2c..2c+1),
//       a1 = (g + 8, 2c..), a2 = (g, 2c + 8..), a3 = (g + 8, 2c + 8..);
//       ldmatrix.x4 with lane l addressing row l % 16, column 8 * (l / 16).
//     B (16 x 8, "col"), 2 regs: b0 = (k 2c..2c+1, n g), b1 = (k 2c+8.., n g).
//       For S, B[d][key] = K[key][d]: ldmatrix.x4 (no transpose) on K rows,
//       lane l addressing key 8 * (l / 16) + l % 8, d 8 * ((l / 8) % 2): two
//       8-key column tiles per load. For P V, B[key][d] = V[key][d]:
//       ldmatrix.x4.trans on V rows, lane l addressing key l % 8 +
//       8 * ((l / 8) % 2), d 8 * (l / 16): two 8-column tiles of d per load.
//     C (16 x 8, float32): c0, c1 = (g, 2c..2c+1), c2, c3 = (g + 8, 2c..).
//       A thread holds rows g and g + 8 of each 16-row tile: row maxima and sums
//       reduce over the 4 lanes of a row (shuffles xor 1, 2). The S
//       accumulators of key tiles 2k, 2k + 1 are, packed to T pairs, exactly
//       the A fragment of P for keys 16k .. 16k + 15.
//
// attn_prefill_simt_kernel<D>  (qL > 8, float32; float32 FMA throughout)
//   A block owns BQ = 32 consecutive queries of one (batch, query head);
//   thread t serves query t / 4 with lane t % 4 owning the float4 columns
//   t % 4 + 4 n of q (pre-scaled, registers) and of the output accumulator.
//   Per tile of BK keys (32, 16 for D = 256) staged in shared memory as
//   float4 (K and V [BK][D / 4], zeros past kL): partial dot products, summed
//   over the row's 4 lanes (shuffles xor 1, 2), mask, online softmax, O += p V.
//   Shared memory (static): 2 * BK * D * 4 bytes, at most 32 KB.
#include "cuda/flash_attention.h"

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "mlx/allocator.h"
#include "mlx/backend/cuda/device.h"

#include "cuda/attn_plan.h"
#include "cuda/attn_wgmma.cuh"
#include "cuda/device_memory.h"
#include "cuda/elements.cuh"
#include "cuda/launch.h"
#include "errors.h"

namespace mlx_kernels::cuda {

namespace {

constexpr float kLog2e = 1.4426950408889634f;
// The score of a masked key: the lowest float32 (MLX's finfo.min).
constexpr float kMasked = -3.4028234663852886e38f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr unsigned kFullMask = 0xffffffffu;
// Prefill: a row's running max (exp2 domain) moves only when a tile's max
// passes it by more than this, so p = 2^(s - m) <= 2^8 (finite in float16 and
// bfloat16 as the A operand of P V).
constexpr float kMaxSlack = 8.0f;

constexpr int kMaskNone = static_cast<int>(AttnMask::None);
constexpr int kMaskCausal = static_cast<int>(AttnMask::Causal);
constexpr int kMaskBool = static_cast<int>(AttnMask::Bool);

struct AttnArgs {
  const void* q;
  const void* k;
  const void* v;
  const void* mask; // bool bytes or T; unused without an array mask
  void* out; // T
  float* part_acc; // decode splits: [B * Hq * qL][splits][D]
  float* part_ml; // [B * Hq * qL][splits][2]: max, sum
  int64_t mask_strides[4];
  float qscale; // scale * log2(e)
  AttnGeometry geo;
};


// Two T elements of one register as floats.
template <typename T>
__device__ __forceinline__ float2 unpack2(uint32_t u) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half22float2(*reinterpret_cast<const __half2*>(&u));
  } else {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u));
  }
}

// 8 consecutive elements of a row, as loaded (16 bytes for 2-byte T, 32 for
// float32).
template <typename T>
struct Chunk8 {
  static constexpr int kWords = sizeof(T) / 2; // 16-byte words
  uint4 w[kWords];
};

template <typename T>
__device__ __forceinline__ Chunk8<T> load_chunk8(const T* p) {
  Chunk8<T> c;
  const uint4* src = reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (int i = 0; i < Chunk8<T>::kWords; ++i) {
    c.w[i] = __ldg(src + i);
  }
  return c;
}

template <typename T>
__device__ __forceinline__ void chunk8_to_float(const Chunk8<T>& c, float (&f)[8]) {
  if constexpr (std::is_same_v<T, float>) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      f[4 * i + 0] = __uint_as_float(c.w[i].x);
      f[4 * i + 1] = __uint_as_float(c.w[i].y);
      f[4 * i + 2] = __uint_as_float(c.w[i].z);
      f[4 * i + 3] = __uint_as_float(c.w[i].w);
    }
  } else {
    const uint32_t u[4] = {c.w[0].x, c.w[0].y, c.w[0].z, c.w[0].w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 x = unpack2<T>(u[i]);
      f[2 * i] = x.x;
      f[2 * i + 1] = x.y;
    }
  }
}

// The score of key j for query i of head hq after masking (s in the exp2
// domain). Only for j < kL and i < qL.
template <typename T>
__device__ __forceinline__ float masked_score(
    float s, const AttnArgs& a, int b, int hq, int i, int j) {
  const AttnGeometry& g = a.geo;
  if (g.mask == kMaskNone) {
    return s;
  }
  if (g.mask == kMaskCausal) {
    return j > i + g.kL - g.qL ? kMasked : s;
  }
  const int64_t at = b * a.mask_strides[0] + hq * a.mask_strides[1] +
      i * a.mask_strides[2] + j * a.mask_strides[3];
  if (g.mask == kMaskBool) {
    return static_cast<const uint8_t*>(a.mask)[at] ? s : kMasked;
  }
  return s + to_f(static_cast<const T*>(a.mask)[at]) * kLog2e;
}

// Online softmax step of one row: from the running max and the new scores'
// max, the new max and the factor that rescales what was accumulated. `live`
// is false while the row has seen nothing but -inf (no weight yet).
__device__ __forceinline__ float softmax_rescale(float& m, float tile_max, bool& live) {
  const float m_new = fmaxf(m, tile_max);
  live = m_new != kNegInf;
  const float alpha = live ? exp2f(m - m_new) : 1.0f; // 0 when m was -inf
  m = m_new;
  return alpha;
}

// exp2(m_part - M): the weight of a partial result with max m_part in a
// combination with overall max M (0 for a part that saw only -inf).
__device__ __forceinline__ float part_weight(float m_part, float M) {
  return m_part == kNegInf ? 0.0f : exp2f(m_part - M);
}

// Elements d .. d + W - 1 of output row n (decode_global_row) from split
// `split`, given their accumulators acc, the row's running max M and sum L:
// the outputs themselves when the keys are not split, else this split's
// partials (acc, and M and L once a row, at d = 0) for the merge pass. W = 4
// (d a multiple of 4) stores the partials as one float4.
template <typename T, int D, int W>
__device__ __forceinline__ void store_decode_columns(
    const AttnArgs& a, const AttnGeometry& g, int64_t n, int split, int d, const float (&acc)[W],
    float M, float L) {
  static_assert(W == 1 || W == 4, "one column or a float4");
  if (g.splits == 1) {
    // kL = 0: zeros; L = 0 (additive -inf everywhere): NaN, as MLX.
    const bool empty = g.kL == 0;
    T* out = static_cast<T*>(a.out) + n * D + d;
#pragma unroll
    for (int i = 0; i < W; ++i) {
      out[i] = from_f<T>(empty ? 0.0f : acc[i] / L);
    }
  } else {
    const int64_t part = n * g.splits + split;
    float* dst = a.part_acc + part * D + d;
    if constexpr (W == 4) {
      *reinterpret_cast<float4*>(dst) = make_float4(acc[0], acc[1], acc[2], acc[3]);
    } else {
      dst[0] = acc[0];
    }
    if (d == 0) {
      a.part_ml[2 * part] = M;
      a.part_ml[2 * part + 1] = L;
    }
  }
}

// o += wt * x, component-wise.
__device__ __forceinline__ void fma4(float4& o, float wt, const float4& x) {
  o.x = fmaf(wt, x.x, o.x);
  o.y = fmaf(wt, x.y, o.y);
  o.z = fmaf(wt, x.z, o.z);
  o.w = fmaf(wt, x.w, o.w);
}

// ---------------------------------------------------------------------------
// cp.async: 16 bytes global -> shared (the merge and prefill kernels)
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0; // 0: zero-fill, nothing read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}

// ---------------------------------------------------------------------------
// Decode

// Blocks per SM the decode kernel is compiled for: 4 (<= 128 registers) where
// that costs no spills (ptxas -v: 2-byte T, RT <= 4, D a power of two), else
// whatever the registers allow (3 blocks at RT = 4, 2 at RT = 8).
template <typename T, int D, int RT>
constexpr int decode_min_blocks() {
  return sizeof(T) == 2 && RT <= 4 && (D & (D - 1)) == 0 ? 4 : 1;
}

template <typename T, int D, int RT>
__global__ void __launch_bounds__(kAttnThreads, (decode_min_blocks<T, D, RT>()))
    attn_decode_kernel(const AttnArgs a) {
  constexpr int kWarps = kDecodeWarps;
  constexpr int C = D / 8; // chunks per row
  constexpr int LPK = C <= 8 ? 8 : (C <= 16 ? 16 : 32); // lanes per key
  constexpr int KPW = 32 / LPK; // keys a warp holds at once
  constexpr int U = RT <= 4 ? 4 : 2; // keys per lane group per iteration
  constexpr int KPI = KPW * U; // keys per warp iteration
  static_assert(kWarps * 32 == kAttnThreads);

  __shared__ __align__(16) float q_rows[RT][D]; // pre-scaled query rows
  __shared__ __align__(16) float warp_acc[kWarps][RT][D];
  __shared__ float warp_max[kWarps][RT];
  __shared__ float warp_sum[kWarps][RT];

  const AttnGeometry& g = a.geo;
  const DecodeWork w = decode_work(g, blockIdx.x);
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int slot = lane / LPK; // which of the warp's keys
  const int c = lane % LPK; // which chunk of the key's row
  const bool has_chunk = c < C;

  // The query head and query of each row (rows past `rows` repeat the last
  // valid one: they read in bounds and are never written).
  int hq[RT];
  int qi[RT];
#pragma unroll
  for (int r = 0; r < RT; ++r) {
    const int row = attn_min(w.row0 + r, g.rows - 1);
    hq[r] = decode_row_head(g, w.hkv, row);
    qi[r] = decode_row_query(g, row);
  }

  const T* q = static_cast<const T*>(a.q);
  for (int e = tid; e < RT * D; e += kAttnThreads) {
    const int r = e / D;
    const int d = e % D;
    const int row = w.row0 + r;
    float x = 0.0f;
    if (row < g.rows) {
      const int64_t qrow = decode_global_row(g, w, row);
      x = to_f(q[qrow * D + d]) * a.qscale;
    }
    q_rows[r][d] = x;
  }
  __syncthreads();

  const int64_t kv_head = (int64_t(w.b) * g.Hkv + w.hkv) * g.kL * D;
  const T* k_lane = static_cast<const T*>(a.k) + kv_head + (has_chunk ? c * 8 : 0);
  const T* v_lane = static_cast<const T*>(a.v) + kv_head + (has_chunk ? c * 8 : 0);

  float m[RT];
  float l[RT];
  float acc[RT][8];
#pragma unroll
  for (int r = 0; r < RT; ++r) {
    m[r] = kNegInf;
    l[r] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      acc[r][e] = 0.0f;
    }
  }

  for (int base = w.k_begin + warp * KPI; base < w.k_end; base += kWarps * KPI) {
    // Load the U keys' K and V chunks (keys past the split repeat its last).
    Chunk8<T> kc[U] = {};
    Chunk8<T> vc[U] = {};
    if (has_chunk) {
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t j = attn_min(base + u * KPW + slot, w.k_end - 1);
        kc[u] = load_chunk8(k_lane + j * D);
        vc[u] = load_chunk8(v_lane + j * D);
      }
    }

    // Scores: this lane's 8 columns, then summed over the key's lanes.
    float s[U][RT];
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int r = 0; r < RT; ++r) {
        s[u][r] = 0.0f;
      }
    }
    if (has_chunk) {
#pragma unroll
      for (int u = 0; u < U; ++u) {
        float kf[8];
        chunk8_to_float(kc[u], kf);
#pragma unroll
        for (int r = 0; r < RT; ++r) {
          const float4 q0 = *reinterpret_cast<const float4*>(&q_rows[r][c * 8]);
          const float4 q1 = *reinterpret_cast<const float4*>(&q_rows[r][c * 8 + 4]);
          const float qv[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
          float x = 0.0f;
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            x = fmaf(qv[e], kf[e], x);
          }
          s[u][r] = x;
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int r = 0; r < RT; ++r) {
#pragma unroll
        for (int off = LPK / 2; off > 0; off /= 2) {
          s[u][r] += __shfl_xor_sync(kFullMask, s[u][r], off);
        }
      }
    }

    // Mask and online softmax; s becomes p.
#pragma unroll
    for (int r = 0; r < RT; ++r) {
      float tile_max = kNegInf;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int j = base + u * KPW + slot;
        const float x = j < w.k_end ? masked_score<T>(s[u][r], a, w.b, hq[r], qi[r], j) : kNegInf;
        s[u][r] = x;
        tile_max = fmaxf(tile_max, x);
      }
      bool live;
      const float alpha = softmax_rescale(m[r], tile_max, live);
      l[r] *= alpha;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        acc[r][e] *= alpha;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const float p = live ? exp2f(s[u][r] - m[r]) : 0.0f;
        s[u][r] = p;
        l[r] += p;
      }
    }

    // acc += p v
    if (has_chunk) {
#pragma unroll
      for (int u = 0; u < U; ++u) {
        float vf[8];
        chunk8_to_float(vc[u], vf);
#pragma unroll
        for (int r = 0; r < RT; ++r) {
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            acc[r][e] = fmaf(s[u][r], vf[e], acc[r][e]);
          }
        }
      }
    }
  }

  // Combine the warp's lane groups (lanes c, c + LPK, ...).
#pragma unroll
  for (int off = LPK; off < 32; off *= 2) {
#pragma unroll
    for (int r = 0; r < RT; ++r) {
      const float m_other = __shfl_xor_sync(kFullMask, m[r], off);
      const float l_other = __shfl_xor_sync(kFullMask, l[r], off);
      const float M = fmaxf(m[r], m_other);
      const float w_own = part_weight(m[r], M);
      const float w_other = part_weight(m_other, M);
      m[r] = M;
      l[r] = l[r] * w_own + l_other * w_other;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float acc_other = __shfl_xor_sync(kFullMask, acc[r][e], off);
        acc[r][e] = acc[r][e] * w_own + acc_other * w_other;
      }
    }
  }

  // Combine the warps.
  if (slot == 0 && has_chunk) {
#pragma unroll
    for (int r = 0; r < RT; ++r) {
      float4* dst = reinterpret_cast<float4*>(&warp_acc[warp][r][c * 8]);
      dst[0] = make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
      dst[1] = make_float4(acc[r][4], acc[r][5], acc[r][6], acc[r][7]);
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < RT; ++r) {
      warp_max[warp][r] = m[r];
      warp_sum[warp][r] = l[r];
    }
  }
  __syncthreads();

  for (int e = tid; e < RT * D; e += kAttnThreads) {
    const int r = e / D;
    const int d = e % D;
    const int row = w.row0 + r;
    if (row >= g.rows) {
      continue;
    }
    float M = kNegInf;
#pragma unroll
    for (int i = 0; i < kWarps; ++i) {
      M = fmaxf(M, warp_max[i][r]);
    }
    float L = 0.0f;
    float o = 0.0f;
#pragma unroll
    for (int i = 0; i < kWarps; ++i) {
      const float wt = part_weight(warp_max[i][r], M);
      L += wt * warp_sum[i][r];
      o += wt * warp_acc[i][r][d];
    }
    const float acc[1] = {o};
    store_decode_columns<T, D, 1>(a, g, decode_global_row(g, w, row), w.split, d, acc, M, L);
  }
}

// ---------------------------------------------------------------------------
// Merge of the decode splits

// The partials of the output row a merge block owns (n = blockIdx.x): S
// splits of (m, l) and of D accumulators.
struct MergeRow {
  int D;
  int S;
  int64_t n;
  const float* ml; // [S][2]
  const float* acc; // [S][D]
};

__device__ __forceinline__ MergeRow merge_row(const AttnArgs& a) {
  const int D = a.geo.D;
  const int S = a.geo.splits;
  const int64_t n = blockIdx.x;
  return {D, S, n, a.part_ml + n * S * 2, a.part_acc + n * S * D};
}

// A warp's float4 columns (lane + 32 t) of a row of D floats into dst.
template <int kF4>
__device__ __forceinline__ void store_lane_columns(float* dst, const float4 (&o)[kF4], int lane,
                                                   int D) {
#pragma unroll
  for (int t = 0; t < kF4; ++t) {
    const int d4 = lane + 32 * t;
    if (d4 * 4 < D) {
      reinterpret_cast<float4*>(dst)[d4] = o[t];
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kAttnThreads) attn_merge_kernel(const AttnArgs a) {
  constexpr int kWarps = kAttnThreads / 32;
  constexpr int kMaxD = 256;
  __shared__ float warp_max[kWarps];
  __shared__ float warp_sum[kWarps];
  __shared__ __align__(16) float warp_acc[kWarps][kMaxD];

  const auto [D, S, n, ml, acc] = merge_row(a);
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;

  // This warp's first split (s = warp) requested before the maxima are
  // reduced, so that with S <= 4 splits the row takes one round of global
  // loads, not two.
  float4 first[kMaxD / 128] = {};
  float first_m = kNegInf;
  float first_l = 0.0f;
  if (warp < S) {
    first_m = ml[2 * warp];
    first_l = ml[2 * warp + 1];
    const float4* src = reinterpret_cast<const float4*>(acc + int64_t(warp) * D);
#pragma unroll
    for (int t = 0; t < kMaxD / 128; ++t) {
      const int d4 = lane + 32 * t;
      if (d4 * 4 < D) {
        first[t] = src[d4];
      }
    }
  }

  float M = kNegInf;
  for (int s = tid; s < S; s += kAttnThreads) {
    M = fmaxf(M, ml[2 * s]);
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    M = fmaxf(M, __shfl_xor_sync(kFullMask, M, off));
  }
  if (lane == 0) {
    warp_max[warp] = M;
  }
  __syncthreads();
  M = kNegInf;
#pragma unroll
  for (int i = 0; i < kWarps; ++i) {
    M = fmaxf(M, warp_max[i]);
  }

  // Warp `warp` takes splits warp, warp + 4, ...; lane owns float4 columns
  // lane and lane + 32.
  float L = 0.0f;
  float4 o[kMaxD / 128] = {};
  if (warp < S) {
    const float wt = part_weight(first_m, M);
    L += wt * first_l;
#pragma unroll
    for (int t = 0; t < kMaxD / 128; ++t) {
      fma4(o[t], wt, first[t]);
    }
  }
#pragma unroll 4
  for (int s = warp + kWarps; s < S; s += kWarps) {
    const float wt = part_weight(ml[2 * s], M);
    L += wt * ml[2 * s + 1];
    const float4* src = reinterpret_cast<const float4*>(acc + int64_t(s) * D);
#pragma unroll
    for (int t = 0; t < kMaxD / 128; ++t) {
      const int d4 = lane + 32 * t;
      if (d4 * 4 < D) {
        fma4(o[t], wt, src[d4]);
      }
    }
  }
  store_lane_columns(warp_acc[warp], o, lane, D);
  if (lane == 0) {
    warp_sum[warp] = L;
  }
  __syncthreads();

  float L_all = 0.0f;
#pragma unroll
  for (int i = 0; i < kWarps; ++i) {
    L_all += warp_sum[i];
  }
  for (int d = tid; d < D; d += kAttnThreads) {
    float x = 0.0f;
#pragma unroll
    for (int i = 0; i < kWarps; ++i) {
      x += warp_acc[i][d];
    }
    // L_all = 0 (additive -inf everywhere): NaN, as MLX.
    static_cast<T*>(a.out)[n * D + d] = from_f<T>(x / L_all);
  }
}

// kF4: float4 columns a lane, D <= 128 * kF4. A batch's rows of acc go to
// shared memory by cp.async, each lane copying and later reading its own
// columns: ptxas kept only a few plain 16-byte loads in flight (64
// registers), interleaved with the math that used them.
template <typename T, int kF4>
__global__ void __launch_bounds__(32 * kMergeWideWarps) attn_merge_wide_kernel(const AttnArgs a) {
  constexpr int kWarps = kMergeWideWarps;
  constexpr int kMaxD = 128 * kF4;
  constexpr int kBatch = 8 / kF4; // splits a warp loads at once (32 KB staged)
  __shared__ float warp_max[kWarps];
  __shared__ float warp_sum[kWarps];
  __shared__ __align__(16) float warp_acc[kWarps][kMaxD];
  __shared__ __align__(16) float staged[kWarps][kBatch][kMaxD];

  const auto [D, S, n, ml, acc] = merge_row(a);
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;

  float m_run = kNegInf; // this warp's max so far; L and o are relative to it
  float L = 0.0f;
  float4 o[kF4] = {};
  for (int s0 = warp; s0 < S; s0 += kWarps * kBatch) {
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int s = s0 + kWarps * j;
#pragma unroll
      for (int t = 0; t < kF4; ++t) {
        const int d = 4 * (lane + 32 * t);
        // Past S or D: zeros, nothing read.
        cp_async16(&staged[warp][j][d], acc + int64_t(s < S ? s : 0) * D + (d < D ? d : 0),
                   s < S && d < D);
      }
    }
    cp_async_commit();
    float ms[kBatch], ls[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int s = s0 + kWarps * j;
      ms[j] = s < S ? ml[2 * s] : kNegInf;
      ls[j] = s < S ? ml[2 * s + 1] : 0.0f;
    }
    float m_new = m_run;
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      m_new = fmaxf(m_new, ms[j]);
    }
    const float keep = part_weight(m_run, m_new);
    L *= keep;
#pragma unroll
    for (int t = 0; t < kF4; ++t) {
      o[t].x *= keep;
      o[t].y *= keep;
      o[t].z *= keep;
      o[t].w *= keep;
    }
    cp_async_wait_all(); // this lane's copies; it reads only those
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const float wt = part_weight(ms[j], m_new);
      L = fmaf(wt, ls[j], L);
#pragma unroll
      for (int t = 0; t < kF4; ++t) {
        fma4(o[t], wt, reinterpret_cast<const float4*>(staged[warp][j])[lane + 32 * t]);
      }
    }
    m_run = m_new;
  }
  if (lane == 0) {
    warp_max[warp] = m_run;
    warp_sum[warp] = L;
  }
  store_lane_columns(warp_acc[warp], o, lane, D);
  __syncthreads();

  float M = kNegInf;
#pragma unroll
  for (int i = 0; i < kWarps; ++i) {
    M = fmaxf(M, warp_max[i]);
  }
  float wt[kWarps];
  float L_all = 0.0f;
#pragma unroll
  for (int i = 0; i < kWarps; ++i) {
    wt[i] = part_weight(warp_max[i], M);
    L_all = fmaf(wt[i], warp_sum[i], L_all);
  }
  for (int d = tid; d < D; d += 32 * kWarps) {
    float y = 0.0f;
#pragma unroll
    for (int i = 0; i < kWarps; ++i) {
      y = fmaf(wt[i], warp_acc[i][d], y);
    }
    // L_all = 0 (additive -inf everywhere): NaN, as MLX.
    static_cast<T*>(a.out)[n * D + d] = from_f<T>(y / L_all);
  }
}

// ---------------------------------------------------------------------------
// Prefill, float16 / bfloat16: tensor cores
// Rows [row0, row0 + ROWS) of a [limit][D] matrix into dst [ROWS][LD] (zeros
// past limit), by the block's threads, 16 bytes each.
template <int ROWS, int D, int LD, typename T>
__device__ __forceinline__ void stage_tile(T* dst, const T* src, int row0, int limit) {
  constexpr int kChunks = D / 8; // 16-byte chunks per row
  for (int e = threadIdx.x; e < ROWS * kChunks; e += kAttnThreads) {
    const int r = e / kChunks;
    const int c = e % kChunks;
    const bool in = row0 + r < limit;
    const T* from = in ? src + int64_t(row0 + r) * D + c * 8 : src;
    cp_async16(dst + r * LD + c * 8, from, in);
  }
}

// Rows [row0, row0 + ROWS) of K and V ([limit][D] each) into k_dst and v_dst
// [ROWS][LD] (zeros past limit), by the block's threads, 16 bytes each. A
// rolled loop: the per-chunk offsets are not kept in registers across calls.
template <int ROWS, int D, int LD, typename T>
__device__ __forceinline__ void stage_kv(
    T* k_dst, T* v_dst, const T* k_src, const T* v_src, int row0, int limit) {
  constexpr int kChunks = D / 8; // 16-byte chunks per row
  const T* k_rows = k_src + int64_t(row0) * D;
  const T* v_rows = v_src + int64_t(row0) * D;
#pragma unroll 1
  for (int e = threadIdx.x; e < ROWS * kChunks; e += kAttnThreads) {
    const int r = e / kChunks;
    const int c = e % kChunks;
    const bool in = row0 + r < limit;
    const int from = in ? r * D + c * 8 : 0;
    const int to = r * LD + c * 8;
    cp_async16(k_dst + to, k_rows + from, in);
    cp_async16(v_dst + to, v_rows + from, in);
  }
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// c += a * b, m16n8k16, T operands, float32 accumulators.
template <typename T>
__device__ __forceinline__ void mma_16816(
    float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// 2^x on the special-function unit (MUFU.EX2): denormal results flush to
// +0, 2^-inf = +0. exp2f adds range fix-ups around the same instruction.
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

template <typename T, int D>
__global__ void __launch_bounds__(kAttnThreads) attn_prefill_mma_kernel(const AttnArgs a) {
  constexpr int MT = D <= 128 ? 2 : 1; // 16-row tiles a warp owns
  constexpr int WR = 16 * MT; // rows a warp owns
  constexpr int BQ = WR * (kAttnThreads / 32); // = prefill_mma_block_q(D)
  constexpr int BK = D == 64 ? 64 : 32; // = prefill_mma_block_k(D)
  constexpr int LD = D + 8; // padded row of a staged tile
  constexpr int NT = BK / 8; // 8-key column tiles of S
  constexpr int DT = D / 8; // 8-column tiles of O
  constexpr int STAGE = 2 * BK * LD; // K then V of one stage
  static_assert(kPrefillMmaStages == 2);

  extern __shared__ __align__(16) unsigned char smem[];
  T* q_tile = reinterpret_cast<T*>(smem);
  T* kv_tiles = q_tile + BQ * LD; // stage st: K at st * STAGE, V at st * STAGE + BK * LD

  const AttnGeometry& g = a.geo;
  const PrefillWork w = prefill_work(g, blockIdx.x);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int gid = lane / 4; // fragment row
  const int tig = lane % 4; // fragment column pair
  const int hkv = w.hq / g.group;
  const T* qh = static_cast<const T*>(a.q) + (int64_t(w.b) * g.Hq + w.hq) * g.qL * D;
  const T* kh = static_cast<const T*>(a.k) + (int64_t(w.b) * g.Hkv + hkv) * g.kL * D;
  const T* vh = static_cast<const T*>(a.v) + (int64_t(w.b) * g.Hkv + hkv) * g.kL * D;
  const int n_tiles = (w.k_end + BK - 1) / BK;
  const bool array_mask = g.mask != kMaskNone && g.mask != kMaskCausal;
  const int row0 = w.q0 + warp * WR; // the warp's first query
  // The last key the warp's first query sees (causal; < 0: none): tiles up to
  // it are visible to every row of the warp.
  const int first_row_last_key = row0 + g.kL - g.qL;
  // Causal: tiles starting past the last key of the warp's last row hold no
  // key any row of the warp sees. When every row of the warp sees some key
  // (first_row_last_key >= 0) such a tile would add weights of exactly 0 and
  // leave every max as it is: the warp skips it (the diagonal of the block).
  const bool skip_past_diagonal = g.mask == kMaskCausal && first_row_last_key >= 0;
  const int last_row_last_key = first_row_last_key + WR - 1;

  stage_tile<BQ, D, LD>(q_tile, qh, w.q0, g.qL);
  if (n_tiles > 0) {
    stage_kv<BK, D, LD>(kv_tiles, kv_tiles + BK * LD, kh, vh, 0, g.kL);
  }
  cp_async_commit();

  float o[MT][DT][4] = {};
  float m[MT][2]; // rows gid, gid + 8 of each 16-row tile
  float l[MT][2]; // this lane's share of the row sums
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    m[mt][0] = m[mt][1] = kNegInf;
    l[mt][0] = l[mt][1] = 0.0f;
  }
  const T* q_frag = q_tile + (warp * WR + lane % 16) * LD + (lane / 16) * 8;
  const int k_off = ((lane / 16) * 8 + lane % 8) * LD + ((lane / 8) % 2) * 8;
  const int v_off = BK * LD + (lane % 8 + ((lane / 8) % 2) * 8) * LD + (lane / 16) * 8;

  for (int t = 0; t < n_tiles; ++t) {
    const int k0 = t * BK;
    const T* kv = kv_tiles + (t % 2) * STAGE;
    cp_async_wait_all();
    __syncthreads(); // tile t (and Q) in place; every warp done with tile t - 1
    if (t + 1 < n_tiles) {
      // Tile t + 1 into the other stage (read last in tile t - 1): it loads
      // while tile t is computed.
      T* next = kv_tiles + ((t + 1) % 2) * STAGE;
      stage_kv<BK, D, LD>(next, next + BK * LD, kh, vh, k0 + BK, g.kL);
      cp_async_commit();
    }
    if (skip_past_diagonal && k0 > last_row_last_key) {
      continue; // the barrier at the top of the next tile is still met
    }

    // S = Q K^T: each K fragment feeds the warp's MT row tiles.
    float s[MT][NT][4] = {};
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      uint32_t qa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        ldmatrix_x4(qa[mt], q_frag + mt * 16 * LD + ks * 16);
      }
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t kb[4];
        ldmatrix_x4(kb, kv + k_off + np * 16 * LD + ks * 16);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_16816<T>(s[mt][2 * np], qa[mt], kb[0], kb[1]);
          mma_16816<T>(s[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
        }
      }
    }

    // Mask (padding keys, the causal diagonal, array masks). Masked tiles are
    // scaled first and masked (sc = 1 below); the others keep raw scores and
    // the scale goes into the exponent: p = 2^(s sc - m), one FFMA a score
    // (the row max of raw scores times sc is the max of the scaled ones for
    // sc > 0; a scale <= 0 takes the explicit path).
    const bool masked_tile = array_mask || k0 + BK > g.kL ||
        (g.mask == kMaskCausal && k0 + BK - 1 > first_row_last_key);
    float sc = a.qscale;
    if (masked_tile || !(sc > 0.0f)) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            s[mt][nt][e] *= sc;
          }
        }
      }
      sc = 1.0f;
    }
    if (masked_tile) {
      // Row by row (an empty asm with a memory clobber between rows keeps the
      // compiler from hoisting every row's mask loads at once: registers).
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int i = row0 + mt * 16 + gid + 8 * h;
          asm volatile("" ::: "memory");
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int e = 2 * h; e < 2 * h + 2; ++e) {
              const int j = k0 + nt * 8 + 2 * tig + e % 2;
              float& x = s[mt][nt][e];
              if (j >= g.kL) {
                x = kNegInf;
              } else if (i < g.qL) {
                x = masked_score<T>(x, a, w.b, w.hq, i, j);
              }
            }
          }
        }
      }
    }

    // Online softmax of rows gid (h = 0) and gid + 8 (h = 1) of each row
    // tile; s becomes p. The running max m only moves when the tile's max
    // passes it by more than kMaxSlack (p <= 2^kMaxSlack): O and l share m,
    // so a stale max is exact, and O is rescaled far less often.
    float alpha[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float tile_max = kNegInf;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          tile_max = fmaxf(tile_max, fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]));
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 2));
        const float m_old = m[mt][h];
        float m_new = fmaxf(m_old, tile_max * sc);
        // m_old = -inf: +inf or NaN (both -inf), never <= the slack.
        if (m_new - m_old <= kMaxSlack) {
          m_new = m_old;
        }
        // 0 when m was -inf; exactly 1 when m stays.
        alpha[mt][h] = m_new != m_old ? exp2_ftz(m_old - m_new) : 1.0f;
        m[mt][h] = m_new;
        // A row with nothing but -inf so far (m = -inf; masked path, sc = 1):
        // exponents -inf - 0, p = 0.
        const float neg_m = m_new == kNegInf ? 0.0f : -m_new;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
          for (int e = 2 * h; e < 2 * h + 2; ++e) {
            const float p = exp2_ftz(fmaf(s[mt][nt][e], sc, neg_m));
            s[mt][nt][e] = p;
            sum += p;
          }
        }
        l[mt][h] = l[mt][h] * alpha[mt][h] + sum;
      }
    }
    // Rescale O only when some row's max moved (a warp-uniform branch; a
    // factor of exactly 1 leaves O as it is).
    bool rescale = false;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      rescale |= alpha[mt][0] != 1.0f || alpha[mt][1] != 1.0f;
    }
    if (__any_sync(kFullMask, rescale)) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int dt = 0; dt < DT; ++dt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            o[mt][dt][e] *= alpha[mt][e / 2];
          }
        }
      }
    }

    // O += P V: each V fragment feeds the warp's MT row tiles.
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        pa[mt][0] = pack2<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][1] = pack2<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][2] = pack2<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][3] = pack2<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, kv + v_off + kk * 16 * LD + dp * 16);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_16816<T>(o[mt][2 * dp], pa[mt], vb[0], vb[1]);
          mma_16816<T>(o[mt][2 * dp + 1], pa[mt], vb[2], vb[3]);
        }
      }
    }
  }
  cp_async_wait_all(); // kL = 0: the Q tile's copies

#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float lsum = l[mt][h];
      lsum += __shfl_xor_sync(kFullMask, lsum, 1);
      lsum += __shfl_xor_sync(kFullMask, lsum, 2);
      const int i = row0 + mt * 16 + gid + 8 * h;
      if (i < g.qL) {
        // kL = 0: zeros; l = 0 (additive -inf everywhere): NaN, as MLX.
        const float inv = g.kL == 0 ? 0.0f : 1.0f / lsum;
        T* dst =
            static_cast<T*>(a.out) + ((int64_t(w.b) * g.Hq + w.hq) * g.qL + i) * D + 2 * tig;
#pragma unroll
        for (int dt = 0; dt < DT; ++dt) {
          *reinterpret_cast<uint32_t*>(dst + dt * 8) =
              pack2<T>(o[mt][dt][2 * h] * inv, o[mt][dt][2 * h + 1] * inv);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Decode, float16 / bfloat16: tensor cores (layout in the header comment)
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

template <typename T, int D, int MT>
__global__ void __launch_bounds__(kAttnThreads, 2) attn_decode_mma_kernel(const AttnArgs a) {
  constexpr int kWarps = kAttnThreads / 32;
  constexpr int BR = 16 * MT; // rows a block
  constexpr int KG = kWarps / MT; // key groups
  constexpr int BK = kDecodeMmaBlockK; // keys a tile
  constexpr int KW = BK / KG; // keys of a tile a warp takes: 16, 32 or 64
  constexpr int LD = D + 8; // padded row of a staged tile
  constexpr int NT = KW / 8; // 8-key column tiles of a warp's S
  constexpr int DT = D / 8; // 8-column tiles of O
  static_assert(MT * KG == kWarps && KW % 16 == 0 && kDecodeMmaStages == 2);

  extern __shared__ __align__(16) unsigned char smem[];
  T* q_tile = reinterpret_cast<T*>(smem); // [BR][LD]
  T* kv = q_tile + BR * LD; // stage s: K [BK][LD] at 2 s BK LD, V right after

  const AttnGeometry& g = a.geo;
  const DecodeWork w = decode_work(g, blockIdx.x);
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int gid = lane / 4; // fragment row
  const int tig = lane % 4; // fragment column pair
  const int mt = warp % MT; // this warp's row tile: block rows 16 mt ..
  const int kg = warp / MT; // this warp's keys of a tile: KW kg ..

  // The query head and query of this thread's rows 16 mt + gid + 8 h (rows
  // past `rows` repeat the last valid one: in-bounds mask reads, never
  // written).
  int hq[2];
  int qi[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = attn_min(w.row0 + mt * 16 + gid + 8 * h, g.rows - 1);
    hq[h] = decode_row_head(g, w.hkv, row);
    qi[h] = decode_row_query(g, row);
  }

  // Q rows of the block (zeros past `rows`).
  {
    constexpr int kChunks = D / 8;
    const T* q = static_cast<const T*>(a.q);
    for (int e = tid; e < BR * kChunks; e += kAttnThreads) {
      const int r = e / kChunks;
      const int c = e % kChunks;
      const int row = w.row0 + r;
      const bool in = row < g.rows;
      const T* from = q;
      if (in) {
        const int64_t qrow = decode_global_row(g, w, row);
        from = q + qrow * D + c * 8;
      }
      cp_async16(q_tile + r * LD + c * 8, from, in);
    }
  }

  const int64_t kv_head = (int64_t(w.b) * g.Hkv + w.hkv) * g.kL * D;
  const T* kh = static_cast<const T*>(a.k) + kv_head;
  const T* vh = static_cast<const T*>(a.v) + kv_head;
  const int n_tiles = (w.k_end - w.k_begin + BK - 1) / BK;
  if (n_tiles > 0) {
    stage_tile<BK, D, LD>(kv, kh, w.k_begin, w.k_end);
    stage_tile<BK, D, LD>(kv + BK * LD, vh, w.k_begin, w.k_end);
  }
  cp_async_commit(); // Q and tile 0

  float o[DT][4] = {};
  float m[2] = {kNegInf, kNegInf}; // rows gid, gid + 8 of the warp's 16
  float l[2] = {0.0f, 0.0f}; // this lane's share of the row sums
  const T* q_frag = q_tile + (mt * 16 + lane % 16) * LD + (lane / 16) * 8;
  const int k_off = (kg * KW + (lane / 16) * 8 + lane % 8) * LD + ((lane / 8) % 2) * 8;
  const int v_off = (kg * KW + lane % 8 + ((lane / 8) % 2) * 8) * LD + (lane / 16) * 8;
  const bool array_mask = g.mask != kMaskNone && g.mask != kMaskCausal;
  const int diag = g.kL - g.qL; // causal: query i sees keys j <= i + diag

  for (int t = 0; t < n_tiles; ++t) {
    if (t + 1 < n_tiles) {
      // Tile t + 1 into the other stage (free since the end of tile t - 1).
      T* next = kv + ((t + 1) & 1) * 2 * BK * LD;
      const int k1 = w.k_begin + (t + 1) * BK;
      stage_tile<BK, D, LD>(next, kh, k1, w.k_end);
      stage_tile<BK, D, LD>(next + BK * LD, vh, k1, w.k_end);
      cp_async_commit();
      cp_async_wait_group<1>(); // this thread's copies of tile t are done
    } else {
      cp_async_wait_group<0>();
    }
    __syncthreads(); // every thread's copies of tile t are visible
    const T* k_frag = kv + (t & 1) * 2 * BK * LD + k_off;
    const T* v_frag = kv + (t & 1) * 2 * BK * LD + BK * LD + v_off;
    const int j0 = w.k_begin + t * BK + kg * KW; // this warp's first key

    // S = Q K^T (16 rows x KW keys)
    float s[NT][4] = {};
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      uint32_t qa[4];
      ldmatrix_x4(qa, q_frag + ks * 16);
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t kb[4];
        ldmatrix_x4(kb, k_frag + np * 16 * LD + ks * 16);
        mma_16816<T>(s[2 * np], qa, kb[0], kb[1]);
        mma_16816<T>(s[2 * np + 1], qa, kb[2], kb[3]);
      }
    }

    // Scale, mask (keys past the split, the causal diagonal, array masks).
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nt][e] *= a.qscale;
      }
    }
    const bool masked_tile = array_mask || j0 + KW > w.k_end ||
        (g.mask == kMaskCausal && j0 + KW - 1 > diag);
    if (masked_tile) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int h = e / 2;
          const int j = j0 + nt * 8 + 2 * tig + e % 2;
          float& x = s[nt][e];
          x = j >= w.k_end ? kNegInf : masked_score<T>(x, a, w.b, hq[h], qi[h], j);
        }
      }
    }

    // Online softmax of rows gid (h = 0) and gid + 8 (h = 1); s becomes p.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float tile_max = kNegInf;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        tile_max = fmaxf(tile_max, fmaxf(s[nt][2 * h], s[nt][2 * h + 1]));
      }
      tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 1));
      tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 2));
      bool live;
      const float alpha = softmax_rescale(m[h], tile_max, live);
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int e = 2 * h; e < 2 * h + 2; ++e) {
          const float p = live ? exp2f(s[nt][e] - m[h]) : 0.0f;
          s[nt][e] = p;
          sum += p;
        }
      }
      l[h] = l[h] * alpha + sum;
#pragma unroll
      for (int dt = 0; dt < DT; ++dt) {
        o[dt][2 * h] *= alpha;
        o[dt][2 * h + 1] *= alpha;
      }
    }

    // O += P V (V rows past the split are zeros: weight 0 times 0)
#pragma unroll
    for (int kk = 0; kk < KW / 16; ++kk) {
      const uint32_t pa[4] = {
          pack2<T>(s[2 * kk][0], s[2 * kk][1]),
          pack2<T>(s[2 * kk][2], s[2 * kk][3]),
          pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
          pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, v_frag + kk * 16 * LD + dp * 16);
        mma_16816<T>(o[2 * dp], pa, vb[0], vb[1]);
        mma_16816<T>(o[2 * dp + 1], pa, vb[2], vb[3]);
      }
    }
    __syncthreads(); // every warp done with this stage before it is refilled
  }
  cp_async_wait_all(); // kL = 0: the Q tile's copies
  __syncthreads();

  // Combine the key groups through shared memory (the K / V stages):
  // red_o [warp][16][D] unnormalized, red_m / red_l [warp][16].
  float* red_o = reinterpret_cast<float*>(kv);
  float* red_m = red_o + kWarps * 16 * D;
  float* red_l = red_m + kWarps * 16;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(kFullMask, l[h], 1);
    l[h] += __shfl_xor_sync(kFullMask, l[h], 2);
    const int rr = warp * 16 + gid + 8 * h;
    if (tig == 0) {
      red_m[rr] = m[h];
      red_l[rr] = l[h];
    }
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) {
      *reinterpret_cast<float2*>(&red_o[rr * D + dt * 8 + 2 * tig]) =
          make_float2(o[dt][2 * h], o[dt][2 * h + 1]);
    }
  }
  // Per block row (one thread each): the combined max M, the key groups'
  // weights and the combined sum L, once a row rather than once an element.
  float* row_wt = red_l + kWarps * 16; // [BR][KG]
  float* row_M = row_wt + BR * KG; // [BR]
  float* row_L = row_M + BR; // [BR]
  int64_t* row_n = reinterpret_cast<int64_t*>(row_L + BR); // [BR] output rows (8-byte aligned)
  static_assert((kWarps * 16 * (D + 2) + BR * (KG + 4)) * sizeof(float) <=
                    2 * 2 * BK * LD * sizeof(T),
                "the combine's arrays fit in the K / V stages");
  __syncthreads();
  if (tid < BR && w.row0 + tid < g.rows) {
    const int rr = tid % 16; // row within its tile
    const int w0 = tid / 16; // warp of key group 0 for this row tile
    float M = kNegInf;
#pragma unroll
    for (int k = 0; k < KG; ++k) {
      M = fmaxf(M, red_m[(k * MT + w0) * 16 + rr]);
    }
    float L = 0.0f;
#pragma unroll
    for (int k = 0; k < KG; ++k) {
      const int at = (k * MT + w0) * 16 + rr;
      const float wt = part_weight(red_m[at], M);
      row_wt[tid * KG + k] = wt;
      L += wt * red_l[at];
    }
    row_M[tid] = M;
    row_L[tid] = L;
    row_n[tid] = decode_global_row(g, w, w.row0 + tid);
  }
  __syncthreads();

  // Then 4 adjacent columns a thread: the weighted sum of the key groups'
  // accumulators, stored as 4 outputs (one split) or a float4 of partials.
  constexpr int D4 = D / 4;
  const int rows_here = attn_min(BR, g.rows - w.row0);
  for (int e = tid; e < rows_here * D4; e += kAttnThreads) {
    const int br = e / D4;
    const int d4 = e % D4;
    const int rr = br % 16;
    const int w0 = br / 16;
    float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int k = 0; k < KG; ++k) {
      const int at = (k * MT + w0) * 16 + rr;
      fma4(x, row_wt[br * KG + k], reinterpret_cast<const float4*>(red_o + at * D)[d4]);
    }
    const float acc[4] = {x.x, x.y, x.z, x.w};
    store_decode_columns<T, D, 4>(a, g, row_n[br], w.split, 4 * d4, acc, row_M[br], row_L[br]);
  }
}

// ---------------------------------------------------------------------------
// Prefill, float32: SIMT
__device__ __forceinline__ float dot4(float4 a, float4 b, float acc) {
  acc = fmaf(a.x, b.x, acc);
  acc = fmaf(a.y, b.y, acc);
  acc = fmaf(a.z, b.z, acc);
  return fmaf(a.w, b.w, acc);
}

__device__ __forceinline__ float4 axpy4(float p, float4 v, float4 acc) {
  return make_float4(
      fmaf(p, v.x, acc.x), fmaf(p, v.y, acc.y), fmaf(p, v.z, acc.z), fmaf(p, v.w, acc.w));
}

template <int D>
__global__ void __launch_bounds__(kAttnThreads) attn_prefill_simt_kernel(const AttnArgs a) {
  constexpr int BQ = kPrefillSimtBlockQ;
  constexpr int BK = D <= 128 ? 32 : 16; // = prefill_simt_block_k(D)
  constexpr int D4 = D / 4; // float4 per row
  constexpr int N4 = D4 / 4; // float4 per lane
  static_assert(BQ * 4 == kAttnThreads);

  __shared__ float4 k_tile[BK][D4];
  __shared__ float4 v_tile[BK][D4];

  const AttnGeometry& g = a.geo;
  const PrefillWork w = prefill_work(g, blockIdx.x);
  const int tid = threadIdx.x;
  const int sub = tid % 4; // this lane's float4 columns: sub + 4 n
  const int i = w.q0 + tid / 4; // this thread's query
  const bool valid = i < g.qL;
  const int hkv = w.hq / g.group;
  const int64_t out_row = (int64_t(w.b) * g.Hq + w.hq) * g.qL + i;
  const float4* kh = static_cast<const float4*>(a.k) + (int64_t(w.b) * g.Hkv + hkv) * g.kL * D4;
  const float4* vh = static_cast<const float4*>(a.v) + (int64_t(w.b) * g.Hkv + hkv) * g.kL * D4;

  float4 qf[N4];
  float4 of[N4];
  {
    const float4* qr = static_cast<const float4*>(a.q) + out_row * D4;
#pragma unroll
    for (int n = 0; n < N4; ++n) {
      float4 x = valid ? qr[sub + 4 * n] : make_float4(0.f, 0.f, 0.f, 0.f);
      qf[n] = make_float4(x.x * a.qscale, x.y * a.qscale, x.z * a.qscale, x.w * a.qscale);
      of[n] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
  float m = kNegInf;
  float l = 0.0f;

  for (int k0 = 0; k0 < w.k_end; k0 += BK) {
    __syncthreads(); // every thread done with the previous tile
    for (int e = tid; e < BK * D4; e += kAttnThreads) {
      const int r = e / D4;
      const int c4 = e % D4;
      const bool in = k0 + r < g.kL;
      const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
      k_tile[r][c4] = in ? kh[int64_t(k0 + r) * D4 + c4] : zero;
      v_tile[r][c4] = in ? vh[int64_t(k0 + r) * D4 + c4] : zero;
    }
    __syncthreads();

    float s[BK];
#pragma unroll
    for (int jj = 0; jj < BK; ++jj) {
      float x = 0.0f;
#pragma unroll
      for (int n = 0; n < N4; ++n) {
        x = dot4(qf[n], k_tile[jj][sub + 4 * n], x);
      }
      s[jj] = x;
    }
    float tile_max = kNegInf;
#pragma unroll
    for (int jj = 0; jj < BK; ++jj) {
      float x = s[jj];
      x += __shfl_xor_sync(kFullMask, x, 1);
      x += __shfl_xor_sync(kFullMask, x, 2);
      const int j = k0 + jj;
      if (j >= g.kL) {
        x = kNegInf;
      } else if (valid) {
        x = masked_score<float>(x, a, w.b, w.hq, i, j);
      }
      s[jj] = x;
      tile_max = fmaxf(tile_max, x);
    }
    bool live;
    const float alpha = softmax_rescale(m, tile_max, live);
    l *= alpha;
#pragma unroll
    for (int n = 0; n < N4; ++n) {
      of[n] = make_float4(of[n].x * alpha, of[n].y * alpha, of[n].z * alpha, of[n].w * alpha);
    }
#pragma unroll
    for (int jj = 0; jj < BK; ++jj) {
      const float p = live ? exp2f(s[jj] - m) : 0.0f;
      l += p;
#pragma unroll
      for (int n = 0; n < N4; ++n) {
        of[n] = axpy4(p, v_tile[jj][sub + 4 * n], of[n]);
      }
    }
  }

  if (valid) {
    // kL = 0: zeros; l = 0 (additive -inf everywhere): NaN, as MLX.
    const float inv = g.kL == 0 ? 0.0f : 1.0f / l;
    float4* dst = static_cast<float4*>(a.out) + out_row * D4;
#pragma unroll
    for (int n = 0; n < N4; ++n) {
      dst[sub + 4 * n] = make_float4(of[n].x * inv, of[n].y * inv, of[n].z * inv, of[n].w * inv);
    }
  }
}

// ---------------------------------------------------------------------------
// Host side
template <typename T, int D>
const void* decode_mma_kernel_for(int block_rows) {
  switch (block_rows) {
    case 16: return (const void*)attn_decode_mma_kernel<T, D, 1>;
    case 32: return (const void*)attn_decode_mma_kernel<T, D, 2>;
    case 64: return (const void*)attn_decode_mma_kernel<T, D, 4>;
  }
  return nullptr;
}

template <typename T, int D>
const void* decode_kernel_for(int block_rows) {
  switch (block_rows) {
    case 1: return (const void*)attn_decode_kernel<T, D, 1>;
    case 2: return (const void*)attn_decode_kernel<T, D, 2>;
    case 4: return (const void*)attn_decode_kernel<T, D, 4>;
    case 8: return (const void*)attn_decode_kernel<T, D, 8>;
  }
  return nullptr;
}

// The main kernel of the plan for head dimension D.
template <typename T, int D>
const void* main_kernel_for(const AttnPlan& plan) {
  switch (plan.kernel) {
    case AttnKernel::Decode:
      if constexpr (std::is_same_v<T, float>) {
        return decode_kernel_for<T, D>(plan.geo.block_rows);
      }
      return nullptr;
    case AttnKernel::DecodeMma:
      if constexpr (!std::is_same_v<T, float>) {
        return decode_mma_kernel_for<T, D>(plan.geo.block_rows);
      }
      return nullptr;
    case AttnKernel::PrefillMma:
      if constexpr (!std::is_same_v<T, float>) {
        return (const void*)attn_prefill_mma_kernel<T, D>;
      }
      return nullptr;
    case AttnKernel::PrefillSimt:
      if constexpr (std::is_same_v<T, float>) {
        return (const void*)attn_prefill_simt_kernel<D>;
      }
      return nullptr;
    case AttnKernel::PrefillWgmma:
      if constexpr (!std::is_same_v<T, float> && (D == 64 || D == 128)) {
        return (const void*)wg::attn_prefill_wgmma_kernel<T, D>;
      }
      return nullptr;
    case AttnKernel::None:
      return nullptr;
  }
  return nullptr;
}

template <typename T>
const void* main_kernel(const AttnPlan& plan) {
  switch (plan.geo.D) {
    case 64: return main_kernel_for<T, 64>(plan);
    case 80: return main_kernel_for<T, 80>(plan);
    case 96: return main_kernel_for<T, 96>(plan);
    case 128: return main_kernel_for<T, 128>(plan);
    case 256: return main_kernel_for<T, 256>(plan);
  }
  return nullptr;
}

// Whether the sm_90a body of the wgmma prefill kernel is what runs on this
// device: a build for plain sm_90 compiles an empty body (no static shared
// memory); the real one keeps its mbarriers in static shared memory. Checked
// once, on the float16 D = 128 instance (every instance is built alike).
bool wgmma_prefill_available() {
  static const bool ok = [] {
    int dev = 0;
    int major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        major != 9) {
      (void)cudaGetLastError();
      return false;
    }
    cudaFuncAttributes attr{};
    if (cudaFuncGetAttributes(&attr, (const void*)wg::attn_prefill_wgmma_kernel<__half, 128>) !=
        cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    return attr.sharedSizeBytes > 0;
  }();
  return ok;
}

// The wgmma prefill's arguments: tensor maps of q, k, v (3-D [heads][rows][D]
// with 128-byte swizzled boxes of 64 x 128). False if the driver refuses one.
bool wgmma_args(const AttnArgs& args, bool bf16, wg::Args& w) {
  const AttnGeometry& g = args.geo;
  w.out = args.out;
  w.qscale = args.qscale;
  w.geo = g;
  return wg::make_tensor_map(&w.tm_q, args.q, bf16, g.D, g.qL, int64_t(g.B) * g.Hq) &&
      wg::make_tensor_map(&w.tm_k, args.k, bf16, g.D, g.kL, int64_t(g.B) * g.Hkv) &&
      wg::make_tensor_map(&w.tm_v, args.v, bf16, g.D, g.kL, int64_t(g.B) * g.Hkv);
}

template <typename T>
void encode(
    mx::cu::CommandEncoder& enc, const AttnPlan& plan, AttnArgs args,
    const std::vector<mx::array>& reads, mx::array& out, std::vector<mx::array>& temps,
    const wg::Args* wgmma = nullptr) {
  const void* kernel = main_kernel<T>(plan);
  if (kernel == nullptr) {
    throw std::runtime_error("mlx_kernels CUDA: no flash_attention kernel for this plan");
  }
  if (plan.kernel == AttnKernel::PrefillWgmma) {
    if (wgmma == nullptr) {
      throw std::runtime_error("mlx_kernels CUDA: the wgmma prefill needs its tensor maps");
    }
    for (const auto& r : reads) {
      enc.set_input_array(r);
    }
    enc.set_output_array(out);
    add_node(enc, kernel, dim3(unsigned(plan.grid)), plan.block, plan.smem_bytes, *wgmma);
    return;
  }
  const bool dynamic =
      plan.kernel == AttnKernel::PrefillMma || plan.kernel == AttnKernel::DecodeMma;
  const size_t dynamic_smem = dynamic ? plan.smem_bytes : 0;
  const bool decode = plan.kernel == AttnKernel::Decode || plan.kernel == AttnKernel::DecodeMma;
  for (const auto& r : reads) {
    enc.set_input_array(r);
  }
  if (!decode || plan.geo.splits == 1) {
    enc.set_output_array(out);
    add_node(enc, kernel, dim3(unsigned(plan.grid)), plan.block, dynamic_smem, args);
    return;
  }
  // Split decode: float32 partials per (output row, split), then the merge.
  const int rows = static_cast<int>(plan.merge_grid);
  mx::array part_acc(
      device_data(sizeof(float) * size_t(rows) * plan.geo.splits * plan.geo.D, enc),
      {rows, plan.geo.splits, plan.geo.D}, mx::float32);
  mx::array part_ml(
      device_data(sizeof(float) * size_t(rows) * plan.geo.splits * 2, enc),
      {rows, plan.geo.splits, 2}, mx::float32);
  temps.push_back(part_acc);
  temps.push_back(part_ml);
  args.part_acc = dev_ptr<float>(part_acc);
  args.part_ml = dev_ptr<float>(part_ml);
  enc.set_output_array(part_acc);
  enc.set_output_array(part_ml);
  add_node(enc, kernel, dim3(unsigned(plan.grid)), plan.block, dynamic_smem, args);

  enc.set_input_array(part_acc);
  enc.set_input_array(part_ml);
  enc.set_output_array(out);
  const void* merge = !plan.merge_wide ? (const void*)attn_merge_kernel<T>
      : plan.geo.D <= 128             ? (const void*)attn_merge_wide_kernel<T, 1>
                                      : (const void*)attn_merge_wide_kernel<T, 2>;
  add_node(enc, merge, dim3(unsigned(plan.merge_grid)), plan.merge_block, 0, args);
}

} // namespace

double peak_dram_gbs() {
  static double gbs = [] {
    int dev = 0;
    check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
    int clock_khz = 0;
    int bus_bits = 0;
    if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0.0;
    }
    return 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
  }();
  return gbs;
}

void flash_attention(
    const std::vector<mx::array>& inputs,
    mx::array& out,
    const AttnParams& p,
    const mx::Stream& stream) {
  auto& enc = mx::cu::get_command_encoder(stream);
  out.set_data(device_data(out.nbytes(), enc));

  poison_output(enc, out);

  const bool is_float32 = out.dtype() == mx::float32;
  AttnDevice device{num_sms(), peak_dram_gbs(), wgmma_prefill_available()};
  AttnPlan plan = plan_cuda_flash_attention(p, is_float32, device);
  if (plan.kernel == AttnKernel::None) {
    return;
  }
  std::vector<mx::array> temps;
  const mx::array q = aligned_rows(inputs[0], enc, temps);
  const mx::array k = aligned_rows(inputs[1], enc, temps);
  const mx::array v = aligned_rows(inputs[2], enc, temps);
  std::vector<mx::array> reads = {q, k, v};

  // kL = 0: k, v and the mask are empty (never read, maybe without a buffer).
  auto address = [](const mx::array& a) { return a.size() > 0 ? dev_ptr<void>(a) : nullptr; };
  AttnArgs args{};
  args.q = address(q);
  args.k = address(k);
  args.v = address(v);
  if (inputs.size() > 3) {
    const mx::array& mask = inputs[3];
    args.mask = address(mask);
    for (int d = 0; d < 4; ++d) {
      args.mask_strides[d] = mask.strides(d);
    }
    reads.push_back(mask);
  }
  args.out = dev_ptr<void>(out);
  args.qscale = p.scale * kLog2e;
  args.geo = plan.geo;

  wg::Args wargs{};
  if (plan.kernel == AttnKernel::PrefillWgmma &&
      !wgmma_args(args, out.dtype() == mx::bfloat16, wargs)) {
    // The driver refused a tensor map: the mma.sync prefill serves it.
    device.has_wgmma = false;
    plan = plan_cuda_flash_attention(p, is_float32, device);
    args.geo = plan.geo;
  }
  const wg::Args* wptr = plan.kernel == AttnKernel::PrefillWgmma ? &wargs : nullptr;
  if (out.dtype() == mx::float16) {
    encode<__half>(enc, plan, args, reads, out, temps, wptr);
  } else if (out.dtype() == mx::bfloat16) {
    encode<__nv_bfloat16>(enc, plan, args, reads, out, temps, wptr);
  } else {
    encode<float>(enc, plan, args, reads, out, temps);
  }
  for (auto& t : temps) {
    enc.add_temporary(t);
  }
}

} // namespace mlx_kernels::cuda
