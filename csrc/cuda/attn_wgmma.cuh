// attn_prefill_wgmma_kernel<T, D>: causal / unmasked prefill attention on
// Hopper warpgroup MMA (wgmma, sm_90a) with TMA loads, float16 / bfloat16,
// D = 64 or 128. Included by flash_attention.cu (and by the standalone check
// benchmarks/attn_wgmma_check.cu); the plan (attn_plan.cpp) routes here only
// mask None / causal, qL > 8, kL > 0, when the build holds the sm_90a body
// (wgmma_prefill_available in flash_attention.cu).
//
// Semantics: those of attn_prefill_mma_kernel (flash_attention.cu header):
// q [B, Hq, qL, D], k and v [B, Hkv, kL, D], out [B, Hq, qL, D], rows
// contiguous, 16-byte aligned; float32 softmax in the exp2 domain; causal:
// query i sees keys j <= i + kL - qL; a masked score is the lowest float32
// (a row that sees no key averages v); keys past kL weigh exactly 0.
//
// Block: kWgThreads = 384 threads = 3 warpgroups, BQ = 128 consecutive
// queries of one (batch, query head), grid order of prefill_work
// (attn_plan.h: heavy causal tiles first).
//   warpgroup 0: producer. After setmaxnreg.dec, one thread issues every TMA
//     load: the Q tile once, then per key tile t (BK = 128 keys) K_t and V_t
//     into stage t % kStages, after waiting for that stage's `empty` barrier.
//   warpgroups 1, 2: consumers (setmaxnreg.inc). Consumer c (0 or 1) owns
//     block rows 64 c .. 64 c + 63; its warp w (of 4) owns rows 16 w ..
//     16 w + 15 of those, as in every m64nNk16 wgmma.
//
// Shared memory (dynamic, base rounded up to 1024 bytes; SW128 = the 128-byte
// swizzle of TMA and wgmma: within each 1024-byte block of 8 rows of 128
// bytes, the 16-byte chunk c of row r sits at chunk c ^ (r % 8)):
//   Q       [D / 64 column blocks][128 rows][64 elements]  SW128
//   stage s: K [D / 64][BK rows][64], then V [D / 64][BK rows][64], SW128
//   A row of 64 elements is 128 bytes; column block cb of a tile starts at
//   cb * rows * 128 bytes (TMA box {64, rows, 1} per column block).
//   mbarriers (static shared): q_full, k_full[S], v_full[S] (count 1: the
//   producer's arrive.expect_tx, completed by the TMA bytes), k_empty[S],
//   v_empty[S] (count 8: lane 0 of each consumer warp once its wgmma reading
//   that K tile (S = Q K^T) or V tile (O += P V) has completed). K and V are
//   released apart (as FlashAttention-3's two pipelines): K_t is free as soon
//   as S_t is done, so with 2 stages the load of K_{t+2} is issued an
//   iteration before it is needed, and V_{t+2} (freed after P V_t) a whole
//   iteration before P V_{t+2} is issued.
//
// wgmma operands (PTX ISA "asynchronous warpgroup level matrix multiply"):
//   S = Q K^T: m64n128k16, A = Q (K-major, from shared memory), B[d][key] =
//     K[key][d], K-major (imm-trans-b = 0). Per k-step kk (16 of d): column
//     block kk / 4, start address + 32 (kk % 4) bytes (the swizzle is applied
//     by the hardware on the absolute address, so a start inside the 128-byte
//     row is the standard way to step K within a swizzle atom; every region
//     base is 1024-aligned, so the descriptor base offset is 0). K-major SW128
//     descriptor: SBO = 1024 (8-row groups), LBO unused (1).
//   O += P V: m64nDk16, A = P from registers, B[key][d] = V[key][d]: the
//     contiguous dimension of V is N (d), so B is MN-major (imm-trans-b = 1).
//     MN-major SW128 descriptor: LBO = distance between 64-element column
//     blocks along N (BK * 128 bytes), SBO = distance between 8-key groups
//     along K (1024). Per k-step kk (16 keys): start + 2048 kk.
//   Descriptor bits: [0,14) start >> 4, [16,30) LBO >> 4, [32,46) SBO >> 4,
//     [49,52) base offset (0), [62,64) swizzle (1 = 128B).
//
// Register fragments (g = lane / 4, c = lane % 4, warp w of the warpgroup):
//   Accumulator m64nN, float32, N / 2 registers: d[4 i + e] = element
//     (row 16 w + g + 8 (e / 2), column 8 i + 2 c + (e % 2)), i < N / 8.
//   A from registers, m64k16 of 16-bit T, 4 registers of 2 elements:
//     a[r] = (row 16 w + g + 8 (r % 2), columns 8 (r / 2) + 2 c, + 1).
//   So the S accumulator values d[8 kk + 2 r], d[8 kk + 2 r + 1] are exactly
//   a[r] of P for keys 16 kk .. 16 kk + 15 (r = 0: row g, keys 16 kk + 2 c;
//   r = 1: row g + 8; r = 2: row g, keys 16 kk + 8 + 2 c; r = 3: row g + 8):
//   P is packed from S in registers, no shared memory. A thread holds rows
//   g and g + 8; each row is spread over the 4 lanes of a quad (row maxima
//   and sums: shuffles xor 1, 2). tests/test_cuda_wgmma_layout.py checks
//   these maps and the descriptor arithmetic against plain matrix products on
//   the CPU; benchmarks/attn_wgmma_check.cu runs the kernel standalone on a
//   GPU against a float64 reference.
//
// Pipeline of a consumer (FlashAttention-3's intra-warpgroup overlap):
//   S_0 = Q K_0; softmax_0 -> P_0.
//   For t = 1 .. n - 1: issue S_t = Q K_t, then O += P_{t-1} V_{t-1}; wait
//   for S_t only (wgmma.wait_group 1: groups complete in order), release K_t
//   and run softmax_t on S_t while the P V wgmma runs; wait for P V; release
//   V_{t-1}; rescale O (lazy, below); pack P_t. Then O += P_{n-1} V_{n-1}.
//   O and P (the A registers of the P V in flight) are touched only after
//   the wait for it; S only after the wait for S.
//   The two consumer warpgroups share the tensor cores: one's softmax runs
//   under the other's MMAs.
// Softmax: as attn_prefill_mma_kernel: unmasked tiles keep raw scores
//   (p = 2^(s qscale - m), one FFMA a score), masked tiles (keys past kL, the
//   causal diagonal for some row of the warpgroup) scale first; lazy row max
//   (moves only when a tile's max passes it by more than kMaxSlack = 8, so
//   p <= 2^8); O rescaled only when some row of the warp moved its max.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/async_copy.cuh"
#include "cuda/attn_plan.h"
#include "cuda/elements.cuh"
#include "cuda/launch.h"

namespace mlx_kernels::cuda {
namespace wg {

constexpr int kThreads = kPrefillWgmmaThreads; // 3 warpgroups
constexpr int BQ = kPrefillWgmmaBlockQ; // 128 queries a block
constexpr int BK = kPrefillWgmmaBlockK; // 128 keys a tile
constexpr int kStages = kPrefillWgmmaStages; // 2
constexpr int kEmptyArrivals = 8; // lane 0 of the 8 consumer warps
constexpr int kProducerRegs = 40;
constexpr int kConsumerRegs = 232; // 40 * 128 + 2 * 232 * 128 = 64512 <= 65536
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kMasked = -3.4028234663852886e38f; // finfo(float32).min
constexpr float kNegInf = -__builtin_huge_valf();
constexpr float kMaxSlack = 8.0f;
constexpr unsigned kFull = 0xffffffffu;

struct Args {
  CUtensorMap tm_q; // 3-D {D, qL, B * Hq}, box {64, 128, 1}, SW128
  CUtensorMap tm_k; // 3-D {D, kL, B * Hkv}, box {64, 128, 1}, SW128
  CUtensorMap tm_v; // as tm_k
  void* out; // T [B, Hq, qL, D]
  float qscale; // scale * log2(e)
  AttnGeometry geo;
};

// Bytes of one [rows][64] SW128 column block.
__host__ __device__ constexpr uint32_t col_block_bytes(int rows) {
  return uint32_t(rows) * 128u;
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// smem_u32, mbarriers and tma_load_3d: cuda/async_copy.cuh.

// --- wgmma ----------------------------------------------------------------
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t((lbo >> 4) & 0x3FFF) << 16) |
      (uint64_t((sbo >> 4) & 0x3FFF) << 32) | (uint64_t(1) << 62);
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// Keeps the compiler from moving accesses of wgmma registers across the
// fence / commit / wait points (they are read and written asynchronously).
template <int N>
__device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    asm volatile("" : "+f"(r[i])::"memory");
  }
}

template <int N>
__device__ __forceinline__ void fence_regs(uint32_t (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      asm volatile("" : "+r"(r[i][j])::"memory");
    }
  }
}

#include "cuda/attn_wgmma_ops.inc"

template <typename T, int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t da, uint64_t db, int scale_d) {
  if constexpr (N == 128) {
    wgmma_ss_n128<T>(d, da, db, scale_d);
  } else {
    static_assert(N == 64);
    wgmma_ss_n64<T>(d, da, db, scale_d);
  }
}

template <typename T, int N>
__device__ __forceinline__ void wgmma_rs(
    float (&d)[N / 2], const uint32_t (&a)[4], uint64_t db, int scale_d) {
  if constexpr (N == 128) {
    wgmma_rs_n128<T>(d, a, db, scale_d);
  } else {
    static_assert(N == 64);
    wgmma_rs_n64<T>(d, a, db, scale_d);
  }
}

// --- small math -------------------------------------------------------------
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// One key tile's softmax step for this thread's rows row[0] (h = 0) and
// row[1] (h = 1): s (the S accumulator of 128 keys k0 ..) becomes p; m, l
// (this lane's share of the row sum) are updated; alpha[h] is the factor O
// must be rescaled by (exactly 1 when the row's max stays). `masked`: the
// tile has keys past kL or crosses the causal diagonal of some row of the
// warpgroup (then every score is scaled and masked first).
__device__ __forceinline__ void softmax_tile(
    float (&s)[BK / 2], float (&m)[2], float (&l)[2], float (&alpha)[2], const AttnGeometry& g,
    float qscale, int k0, const int (&row)[2], int c, bool masked) {
  float sc = qscale;
  if (masked || !(sc > 0.0f)) {
#pragma unroll
    for (int i = 0; i < BK / 2; ++i) {
      s[i] *= sc;
    }
    sc = 1.0f;
  }
  if (masked) {
    const bool causal = g.mask == static_cast<int>(AttnMask::Causal);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int last = row[h] + g.kL - g.qL; // causal: the row's last key
#pragma unroll
      for (int n8 = 0; n8 < BK / 8; ++n8) {
#pragma unroll
        for (int e = 2 * h; e < 2 * h + 2; ++e) {
          const int j = k0 + 8 * n8 + 2 * c + (e & 1);
          float& x = s[4 * n8 + e];
          if (j >= g.kL) {
            x = kNegInf;
          } else if (causal && row[h] < g.qL && j > last) {
            x = kMasked;
          }
        }
      }
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float tmax = kNegInf;
#pragma unroll
    for (int n8 = 0; n8 < BK / 8; ++n8) {
      tmax = fmaxf(tmax, fmaxf(s[4 * n8 + 2 * h], s[4 * n8 + 2 * h + 1]));
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(kFull, tmax, 1));
    tmax = fmaxf(tmax, __shfl_xor_sync(kFull, tmax, 2));
    const float m_old = m[h];
    float m_new = fmaxf(m_old, tmax * sc);
    // m_old = -inf: the difference is +inf or NaN, never <= the slack.
    if (m_new - m_old <= kMaxSlack) {
      m_new = m_old;
    }
    alpha[h] = m_new != m_old ? ex2(m_old - m_new) : 1.0f; // 0 when m was -inf
    m[h] = m_new;
    // Nothing but -inf so far (m = -inf; masked path, sc = 1): p = 2^-inf = 0.
    const float neg_m = m_new == kNegInf ? 0.0f : -m_new;
    float sum = 0.0f;
#pragma unroll
    for (int n8 = 0; n8 < BK / 8; ++n8) {
#pragma unroll
      for (int e = 2 * h; e < 2 * h + 2; ++e) {
        const float p = ex2(fmaf(s[4 * n8 + e], sc, neg_m));
        s[4 * n8 + e] = p;
        sum += p;
      }
    }
    l[h] = l[h] * alpha[h] + sum;
  }
}

template <typename T>
__device__ __forceinline__ void pack_p(const float (&s)[BK / 2], uint32_t (&pa)[BK / 16][4]) {
#pragma unroll
  for (int kk = 0; kk < BK / 16; ++kk) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      pa[kk][r] = pack2<T>(s[8 * kk + 2 * r], s[8 * kk + 2 * r + 1]);
    }
  }
}

#endif // __CUDA_ARCH_FEAT_SM90_ALL

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 1)
    attn_prefill_wgmma_kernel(const __grid_constant__ Args a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(D == 64 || D == 128);
  constexpr int NCB = D / 64; // 64-element column blocks of a row
  constexpr uint32_t kQBytes = NCB * col_block_bytes(BQ);
  constexpr uint32_t kTileBytes = NCB * col_block_bytes(BK); // K or V of one stage
  constexpr uint32_t kStageBytes = 2 * kTileBytes;
  // The mbarriers live in static shared memory: its size (cudaFuncGetAttributes
  // sharedSizeBytes > 0) tells the host that this body, not the empty one of
  // a plain sm_90 build, is what runs.
  __shared__ __align__(8) uint64_t bars[1 + 4 * kStages];
  extern __shared__ __align__(1024) unsigned char smem_raw[];

  const uint32_t base = (smem_u32(smem_raw) + 1023u) & ~1023u;
  const uint32_t q_smem = base;
  const uint32_t kv_smem = base + kQBytes; // stage st: K at st * kStageBytes, V + kTileBytes
  const uint32_t bar0 = smem_u32(bars);
  const uint32_t q_full = bar0;
  auto k_full = [&](int st) { return bar0 + 8u * (1 + st); };
  auto v_full = [&](int st) { return bar0 + 8u * (1 + kStages + st); };
  auto k_empty = [&](int st) { return bar0 + 8u * (1 + 2 * kStages + st); };
  auto v_empty = [&](int st) { return bar0 + 8u * (1 + 3 * kStages + st); };

  const AttnGeometry& g = a.geo;
  const PrefillWork w = prefill_work(g, blockIdx.x);
  const int n_tiles = (w.k_end + BK - 1) / BK; // >= 1 (the plan routes kL > 0 only)
  const int hkv = w.hq / g.group;

  if (threadIdx.x == 0) {
    mbar_init(q_full, 1);
    for (int st = 0; st < kStages; ++st) {
      mbar_init(k_full(st), 1);
      mbar_init(v_full(st), 1);
      mbar_init(k_empty(st), kEmptyArrivals);
      mbar_init(v_empty(st), kEmptyArrivals);
    }
    // Make the initialized barriers visible to the async proxy (TMA).
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  const int wg_idx = threadIdx.x / 128;
  if (wg_idx == 0) {
    // ---- producer ----
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs));
    if (threadIdx.x == 0) {
      const int q_head = w.b * g.Hq + w.hq;
      const int kv_head = w.b * g.Hkv + hkv;
      mbar_arrive_expect_tx(q_full, kQBytes);
      for (int cb = 0; cb < NCB; ++cb) {
        tma_load_3d(q_smem + cb * col_block_bytes(BQ), &a.tm_q, 64 * cb, w.q0, q_head, q_full);
      }
      for (int t = 0; t < n_tiles; ++t) {
        const int st = t % kStages;
        // Use `use` of the stage waits for the release of use - 1 (parity
        // (use - 1) & 1; the first use passes at once on the fresh barrier).
        const uint32_t parity = (uint32_t(t / kStages) & 1u) ^ 1u;
        const uint32_t k_dst = kv_smem + st * kStageBytes;
        const uint32_t v_dst = k_dst + kTileBytes;
        mbar_wait(k_empty(st), parity);
        mbar_arrive_expect_tx(k_full(st), kTileBytes);
        for (int cb = 0; cb < NCB; ++cb) {
          tma_load_3d(k_dst + cb * col_block_bytes(BK), &a.tm_k, 64 * cb, t * BK, kv_head,
                      k_full(st));
        }
        mbar_wait(v_empty(st), parity);
        mbar_arrive_expect_tx(v_full(st), kTileBytes);
        for (int cb = 0; cb < NCB; ++cb) {
          tma_load_3d(v_dst + cb * col_block_bytes(BK), &a.tm_v, 64 * cb, t * BK, kv_head,
                      v_full(st));
        }
      }
    }
    return;
  }

  // ---- consumers ----
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
  const int cw = wg_idx - 1; // consumer warpgroup: block rows 64 cw ..
  const int tid = threadIdx.x % 128;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int gq = lane / 4;
  const int c = lane % 4;
  const int wg_row0 = w.q0 + 64 * cw; // the warpgroup's first query
  const int row[2] = {wg_row0 + 16 * warp + gq, wg_row0 + 16 * warp + gq + 8};
  // Keys past the warpgroup's first query's last key: per-element mask.
  const bool causal = g.mask == static_cast<int>(AttnMask::Causal);
  const int first_last_key = wg_row0 + g.kL - g.qL;

  // A = Q rows 64 cw .. of each column block; K-major SW128.
  const uint32_t q_wg = q_smem + 64u * 128u * cw;
  auto q_desc = [&](int kk) {
    return sw128_desc(q_wg + (kk / 4) * col_block_bytes(BQ) + 32u * (kk % 4), 16u, 1024u);
  };
  auto k_desc = [&](int st, int kk) {
    return sw128_desc(
        kv_smem + st * kStageBytes + (kk / 4) * col_block_bytes(BK) + 32u * (kk % 4), 16u, 1024u);
  };
  auto v_desc = [&](int st, int kk) {
    return sw128_desc(
        kv_smem + st * kStageBytes + kTileBytes + 2048u * kk, col_block_bytes(BK), 1024u);
  };
  auto tile_masked = [&](int k0) {
    return k0 + BK > g.kL || (causal && k0 + BK - 1 > first_last_key);
  };

  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) {
    o[i] = 0.0f;
  }
  float m[2] = {kNegInf, kNegInf};
  float l[2] = {0.0f, 0.0f};
  float alpha[2];
  float s[BK / 2];
  uint32_t pa[BK / 16][4];

  mbar_wait(q_full, 0);

  // Tile 0: S_0 = Q K_0, softmax, P_0.
  mbar_wait(k_full(0), 0);
  fence_regs(s);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    wgmma_ss<T, BK>(s, q_desc(kk), k_desc(0, kk), kk > 0);
  }
  wgmma_commit();
  wgmma_wait<0>();
  fence_regs(s);
  if (lane == 0) {
    mbar_arrive(k_empty(0));
  }
  softmax_tile(s, m, l, alpha, g, a.qscale, 0, row, c, tile_masked(0));
  pack_p<T>(s, pa);

  for (int t = 1; t < n_tiles; ++t) {
    const int st = t % kStages;
    const int prev = (t - 1) % kStages;
    // S_t = Q K_t
    mbar_wait(k_full(st), uint32_t(t / kStages) & 1u);
    fence_regs(s);
    fence_regs(o);
    fence_regs(pa);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      wgmma_ss<T, BK>(s, q_desc(kk), k_desc(st, kk), kk > 0);
    }
    wgmma_commit();
    // O += P_{t-1} V_{t-1}
    mbar_wait(v_full(prev), uint32_t((t - 1) / kStages) & 1u);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      wgmma_rs<T, D>(o, pa[kk], v_desc(prev, kk), 1);
    }
    wgmma_commit();
    wgmma_wait<1>(); // S_t done (K_t free); P V may still run
    fence_regs(s);
    if (lane == 0) {
      mbar_arrive(k_empty(st));
    }
    softmax_tile(s, m, l, alpha, g, a.qscale, t * BK, row, c, tile_masked(t * BK));
    wgmma_wait<0>(); // P V done: V_{t-1} free, O and pa may be touched
    fence_regs(o);
    fence_regs(pa);
    if (lane == 0) {
      mbar_arrive(v_empty(prev));
    }
    if (__any_sync(kFull, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
      for (int i = 0; i < D / 2; ++i) {
        o[i] *= alpha[(i % 4) / 2];
      }
    }
    pack_p<T>(s, pa);
  }

  // O += P_{n-1} V_{n-1}
  {
    const int last = (n_tiles - 1) % kStages;
    mbar_wait(v_full(last), uint32_t((n_tiles - 1) / kStages) & 1u);
    fence_regs(o);
    fence_regs(pa);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      wgmma_rs<T, D>(o, pa[kk], v_desc(last, kk), 1);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(o);
    // (No release: the producer issues nothing after the last tile.)
  }

  // Epilogue: out = O / l, rows below qL.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float lsum = l[h];
    lsum += __shfl_xor_sync(kFull, lsum, 1);
    lsum += __shfl_xor_sync(kFull, lsum, 2);
    if (row[h] < g.qL) {
      const float inv = 1.0f / lsum;
      T* dst = static_cast<T*>(a.out) + ((int64_t(w.b) * g.Hq + w.hq) * g.qL + row[h]) * D + 2 * c;
#pragma unroll
      for (int n8 = 0; n8 < D / 8; ++n8) {
        *reinterpret_cast<uint32_t*>(dst + 8 * n8) =
            pack2<T>(o[4 * n8 + 2 * h] * inv, o[4 * n8 + 2 * h + 1] * inv);
      }
    }
  }
#endif // __CUDA_ARCH_FEAT_SM90_ALL
}

// ---------------------------------------------------------------------------
// Host side.
// A [heads][rows][D] tensor of 2-byte elements as a 3-D TMA map with boxes of
// {64 elements, 128 rows, 1 head} and the 128-byte swizzle; rows past `rows`
// read as zeros. Returns false when the driver refuses it.
inline bool make_tensor_map(
    CUtensorMap* map, const void* ptr, bool bf16, int D, int64_t rows, int64_t heads) {
  const cuuint64_t dims[3] = {cuuint64_t(D), cuuint64_t(rows), cuuint64_t(heads)};
  const cuuint64_t strides[2] = {cuuint64_t(D) * 2, cuuint64_t(D) * 2 * cuuint64_t(rows)};
  const cuuint32_t box[3] = {64, 128, 1};
  return encode_tensor_map(
      map, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 3, ptr,
      dims, strides, box, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
}

} // namespace wg
} // namespace mlx_kernels::cuda
