// Attention: out = softmax(scale * q k^T + mask) v, one softmax per query row.
//
// Data layout:
//   q [B, Hq, qL, D], k and v [B, Hkv, kL, D], out [B, Hq, qL, D], all
//   row-contiguous (the host makes q, k and v so), one dtype T. Query head h
//   reads KV head h / (Hq / Hkv) (GQA). The array masks are read in place
//   through four strides (MlxkAttnArgs::mask_strides, zero on broadcast axes)
//   from the view [B, Hq, qL, kL]: bool (true = attend) or additive (T).
//   Causal: query i sees keys j <= i + kL - qL (bottom-right aligned).
//   All arithmetic is float32. Scores are kept in the exp2 domain (q is
//   pre-scaled by scale * log2(e), an additive mask multiplied by log2(e)).
//   A masked score (bool, causal) becomes the lowest float32, as MLX fills
//   them with finfo.min: a row with every key masked gets uniform weights
//   (the mean of v). Padding keys (past kL) get weight exactly 0. An
//   additive -inf over a whole row gives NaN there, as in MLX.
//
// The host's launch plan (csrc/metal/attn_plan.cpp) picks:
//
// mlxk_attn_prefill<T, D>  (qL > 8)
//   Threadgroup: 4 simdgroups x 32 lanes, owning BQ = 32 consecutive queries
//   of one (batch, query head); simdgroup s owns queries 8s .. 8s + 7 of the
//   tile. Grid: ceil(qL / 32) x Hq x B. The simdgroup keeps, in registers, its
//   8 x D block of q (pre-scaled) and of the output accumulator as D / 8
//   8x8 fragments each, plus the running max and sum of its rows. Per tile of
//   BK keys (BK = 32 for D <= 96, 16 for D = 128, 8 for D = 256):
//     all 128 threads stage K and V tiles [BK][D + 8] in threadgroup memory
//     (in T; rows past kL zero-filled); barrier;
//     S = Q K^T: BK / 8 fragments, D / 8 simdgroup_matrix<float, 8, 8>
//     products each; mask, online softmax on the fragments (row max over the
//     4 lanes that share a row: 2 simd_shuffle_xor); O = O * alpha + P V
//     (D / 8 x BK / 8 products); barrier.
//   Causal: the key loop stops after the last tile a query of the tile can
//   see (tiles entirely above the diagonal are skipped), unless a query of
//   the tile sees no key at all (qL > kL), which then needs every key.
//   Threadgroup memory: 2 * BK * (D + 8) * sizeof(T): float32 D = 64: 18.4
//   KB, 80: 22.5 KB, 96: 26.6 KB, 128: 17.4 KB, 256: 16.9 KB (half that for
//   float16 / bfloat16), within 32 KB.
//   Fragments are filled and read element-wise through thread_elements()
//   using the lane layout of an 8x8 simdgroup_matrix (lane l holds row
//   4 * bit4(l) + bits2..1(l), columns 4 * bit3(l) + 2 * bit0(l) + {0, 1}):
//   this converts T to float on the way and keeps the tiles in T.
//
// mlxk_attn_decode<T, D, RT>  (qL <= 8)
//   A threadgroup serves RT rows (RT in 1, 2, 4, 8: the plan's next power of
//   two of min(G * qL, 8)) of the G * qL (query head of the group, query)
//   pairs that share one KV head, over one split of the keys. Grid: splits x
//   Hkv x (B * row_tiles). Threadgroup: 4 simdgroups x 32 lanes. The RT query
//   rows (pre-scaled, float) sit in threadgroup memory. The split's keys are
//   dealt to the simdgroups in blocks of 32, one key per lane: the lane
//   computes the RT scores of its key (K row read once, for every row), the
//   block max of each row is a simd_max; p = exp2(s - m) goes through a
//   per-simdgroup threadgroup buffer [RT][32]; then lanes switch to D (lane
//   owns d = lane + 32 t, t < ceil(D / 32)), read each V row of the block
//   once (coalesced) and accumulate p * v for every row in float32. At the
//   end the 4 simdgroups' (max, sum, accumulator) are combined through
//   threadgroup memory (sums by simd_sum). With one split the threadgroup
//   writes out; with several it writes its partial (max, sum, unnormalized
//   accumulator) in float32 and mlxk_attn_merge combines them.
//   Threadgroup memory: RT * D * 4 (q) + 4 * RT * 32 * 4 (p) + RT * D * 4
//   (combine) + 2 * 4 * RT * 4: at most 20.7 KB (RT = 8, D = 256).
//
// mlxk_attn_merge<T, D>  (decode with splits > 1)
//   One threadgroup of 32 threads per output row (b, query head, query):
//   M = max of the splits' maxima, weights exp2(m_s - M), out = sum_s w_s
//   acc_s / sum_s w_s l_s; threads over D.
//
// Device traffic: bytes of K and V read per query head (float16, D = 128,
// kL = 4096: K and V of one head are 2 * 4096 * 256 B = 2 MiB):
//   prefill: each threadgroup reads K and V of its head once (up to the
//     diagonal under a causal mask): 2 * kL * D * sizeof(T) per 32 queries,
//     i.e. 2 MiB / 32 = 64 KiB per query row at kL = 4096.
//   decode: a threadgroup reads K and V once for its RT rows: per query head
//     2 * kL * D * sizeof(T) / min(G * qL, 8): at G = 8, qL = 1: 256 KiB
//     (MLX's vector kernel: 2 MiB, K and V read once per query head), at
//     G = 1: 2 MiB. Split partials add (D + 2) * 4 bytes per split and row.
#include "mlxk_utils.h"

#include "flash_attention_args.h"

namespace mlxk_attn {

constant constexpr int kMaskNone = 0;
constant constexpr int kMaskCausal = 1;
constant constexpr int kMaskBool = 2;
constant constexpr int kMaskAdditive = 3;
constant constexpr float kLog2e = 1.4426950408889634f;

// The lowest float32: the score of a masked key (as MLX's finfo.min).
constant constexpr float kMasked = -3.4028234663852886e38f;
constant constexpr float kNegInf = -numeric_limits<float>::infinity();

// Row and column of the first of the two elements lane `lane` holds in an
// 8x8 simdgroup_matrix (the second is at column + 1).
inline short2 frag_coord(ushort lane) {
  const short qid = short(lane / 4);
  const short row = (qid & 4) + short((lane / 2) % 4);
  const short col = (qid & 2) * 2 + short(lane % 2) * 2;
  return short2(col, row);
}

// d = a * b + d on 8x8 fragments held as this lane's two elements.
inline void mma(thread float2& d, thread const float2& a, thread const float2& b) {
  simdgroup_matrix<float, 8, 8> A;
  simdgroup_matrix<float, 8, 8> B;
  simdgroup_matrix<float, 8, 8> C;
  reinterpret_cast<thread float2&>(A.thread_elements()) = a;
  reinterpret_cast<thread float2&>(B.thread_elements()) = b;
  reinterpret_cast<thread float2&>(C.thread_elements()) = d;
  simdgroup_multiply_accumulate(C, A, B, C);
  d = reinterpret_cast<thread float2&>(C.thread_elements());
}

// The score of key j for query i of head hq after masking (s in the exp2
// domain); j < kL.
template <typename T>
inline float masked_score(
    float s,
    int b,
    int hq,
    int i,
    int j,
    device const T* mask,
    constant MlxkAttnArgs& args) {
  switch (args.mask) {
    case kMaskCausal:
      return j > i + args.kL - args.qL ? kMasked : s;
    case kMaskBool: {
      device const bool* m = reinterpret_cast<device const bool*>(mask);
      const int64_t at = b * args.mask_strides[0] + hq * args.mask_strides[1] +
          i * args.mask_strides[2] + j * args.mask_strides[3];
      return m[at] ? s : kMasked;
    }
    case kMaskAdditive: {
      const int64_t at = b * args.mask_strides[0] + hq * args.mask_strides[1] +
          i * args.mask_strides[2] + j * args.mask_strides[3];
      return s + float(mask[at]) * kLog2e;
    }
    default:
      return s;
  }
}

// Online softmax step for one row: the new max from the old one and the
// tile's; alpha rescales what was accumulated, and `live` is false while the
// row has seen nothing but -inf (additive mask): no weight yet.
inline float softmax_step(float m_old, float m_tile, thread float& m_new, thread bool& live) {
  m_new = max(m_old, m_tile);
  live = m_new != kNegInf;
  return live ? exp2(m_old - m_new) : 1.0f; // 0 when m_old = -inf
}

template <int D>
struct PrefillTile {
  static constant constexpr int BQ = 32; // queries per threadgroup
  static constant constexpr int BK = D <= 96 ? 32 : (D <= 128 ? 16 : 8); // keys per tile
  static constant constexpr int LD = D + 8; // padded row of a staged tile
};

} // namespace mlxk_attn

// ---------------------------------------------------------------------------
template <typename T, int D>
[[kernel]] void mlxk_attn_prefill(
    device const T* q [[buffer(0)]],
    device const T* k [[buffer(1)]],
    device const T* v [[buffer(2)]],
    device const T* mask [[buffer(3)]],
    device T* out [[buffer(4)]],
    constant MlxkAttnArgs& args [[buffer(5)]],
    uint3 tgid [[threadgroup_position_in_grid]],
    uint lid [[thread_index_in_threadgroup]],
    uint simd_gid [[simdgroup_index_in_threadgroup]],
    uint simd_lid [[thread_index_in_simdgroup]]) {
  using namespace mlxk_attn;
  constexpr int BQ = PrefillTile<D>::BQ;
  constexpr int BK = PrefillTile<D>::BK;
  constexpr int LD = PrefillTile<D>::LD;
  constexpr int DB = D / 8; // fragments along D
  constexpr int KB = BK / 8; // fragments along a key tile
  constexpr int threads = 128;

  threadgroup T k_tile[BK * LD];
  threadgroup T v_tile[BK * LD];

  const int qL = args.qL;
  const int kL = args.kL;
  const int b = int(tgid.z);
  const int hq = int(tgid.y);
  const int hkv = hq / (args.Hq / args.Hkv);
  const int q0 = int(tgid.x) * BQ;
  const short2 fc = frag_coord(ushort(simd_lid)); // (column, row) in a fragment
  const int i = q0 + int(simd_gid) * 8 + fc.y; // this lane's query

  device const T* kh = k + (int64_t(b) * args.Hkv + hkv) * kL * D;
  device const T* vh = v + (int64_t(b) * args.Hkv + hkv) * kL * D;

  // This simdgroup's 8 rows of q, pre-scaled (zeros past qL).
  float2 qf[DB];
  {
    device const T* qr = q + ((int64_t(b) * args.Hq + hq) * qL + i) * D + fc.x;
    MLXK_UNROLL
    for (int kd = 0; kd < DB; ++kd) {
      qf[kd] = i < qL ? float2(float(qr[8 * kd]), float(qr[8 * kd + 1])) * args.qscale
                      : float2(0.0f);
    }
  }
  float2 of[DB];
  MLXK_UNROLL
  for (int dj = 0; dj < DB; ++dj) {
    of[dj] = float2(0.0f);
  }
  float m = kNegInf; // running max of this lane's row
  float l = 0.0f; // this lane's share of the running sum

  // Keys to visit: under a causal mask, up to the last one the tile's last
  // query sees, unless some query of the tile sees none (then all of them).
  int k_end = kL;
  if (args.mask == kMaskCausal && q0 + kL - qL >= 0) {
    k_end = min(kL, min(q0 + BQ, qL) - 1 + kL - qL + 1);
  }

  for (int k0 = 0; k0 < k_end; k0 += BK) {
    // Stage K and V rows [k0, k0 + BK), zeros past kL.
    for (int e = int(lid); e < BK * D / 4; e += threads) {
      const int r = e / (D / 4);
      const int c = (e % (D / 4)) * 4;
      const bool in = k0 + r < kL;
      device const T* kr = kh + int64_t(k0 + r) * D + c;
      device const T* vr = vh + int64_t(k0 + r) * D + c;
      MLXK_UNROLL
      for (int u = 0; u < 4; ++u) {
        k_tile[r * LD + c + u] = in ? kr[u] : T(0);
        v_tile[r * LD + c + u] = in ? vr[u] : T(0);
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);

    // S = Q K^T: the B operand is K^T, element (d, key) = k_tile[key][d].
    float2 sf[KB];
    MLXK_UNROLL
    for (int kb = 0; kb < KB; ++kb) {
      sf[kb] = float2(0.0f);
      const threadgroup T* kt = k_tile + (kb * 8 + fc.x) * LD + fc.y;
      MLXK_UNROLL
      for (int kd = 0; kd < DB; ++kd) {
        const float2 kf = float2(float(kt[8 * kd]), float(kt[LD + 8 * kd]));
        mma(sf[kb], qf[kd], kf);
      }
    }

    // Mask, then the online softmax of this lane's row.
    float tile_max = kNegInf;
    MLXK_UNROLL
    for (int kb = 0; kb < KB; ++kb) {
      MLXK_UNROLL
      for (int u = 0; u < 2; ++u) {
        const int j = k0 + kb * 8 + fc.x + u;
        float s = kNegInf; // padding
        if (j < kL) {
          // (rows past qL are computed but never written: no mask there)
          s = i < qL ? masked_score(sf[kb][u], b, hq, i, j, mask, args) : sf[kb][u];
        }
        sf[kb][u] = s;
        tile_max = max(tile_max, s);
      }
    }
    // The 4 lanes that hold a row differ in lane bits 0 and 3.
    tile_max = max(tile_max, simd_shuffle_xor(tile_max, ushort(1)));
    tile_max = max(tile_max, simd_shuffle_xor(tile_max, ushort(8)));
    float m_new;
    bool live;
    const float alpha = softmax_step(m, tile_max, m_new, live);
    m = m_new;
    float tile_sum = 0.0f;
    MLXK_UNROLL
    for (int kb = 0; kb < KB; ++kb) {
      MLXK_UNROLL
      for (int u = 0; u < 2; ++u) {
        const int j = k0 + kb * 8 + fc.x + u;
        const float p = (live && j < kL) ? exp2(sf[kb][u] - m_new) : 0.0f;
        sf[kb][u] = p;
        tile_sum += p;
      }
    }
    l = l * alpha + tile_sum;

    // O = O * alpha + P V: the B operand is V, element (key, d).
    MLXK_UNROLL
    for (int dj = 0; dj < DB; ++dj) {
      of[dj] = of[dj] * alpha;
      const threadgroup T* vt = v_tile + fc.y * LD + dj * 8 + fc.x;
      MLXK_UNROLL
      for (int kb = 0; kb < KB; ++kb) {
        const float2 vf = float2(float(vt[kb * 8 * LD]), float(vt[kb * 8 * LD + 1]));
        mma(of[dj], sf[kb], vf);
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }

  // The row's sum over its 4 lanes; write (no keys at all: zeros, as MLX).
  l += simd_shuffle_xor(l, ushort(1));
  l += simd_shuffle_xor(l, ushort(8));
  if (i < qL) {
    const float inv = kL == 0 ? 0.0f : 1.0f / l; // l = 0: all -inf, NaN as MLX
    device T* o = out + ((int64_t(b) * args.Hq + hq) * qL + i) * D + fc.x;
    MLXK_UNROLL
    for (int dj = 0; dj < DB; ++dj) {
      o[8 * dj] = static_cast<T>(of[dj][0] * inv);
      o[8 * dj + 1] = static_cast<T>(of[dj][1] * inv);
    }
  }
}

// ---------------------------------------------------------------------------
template <typename T, int D, int RT>
[[kernel]] void mlxk_attn_decode(
    device const T* q [[buffer(0)]],
    device const T* k [[buffer(1)]],
    device const T* v [[buffer(2)]],
    device const T* mask [[buffer(3)]],
    device T* out [[buffer(4)]],
    constant MlxkAttnArgs& args [[buffer(5)]],
    device float* part_acc [[buffer(6)]],
    device float* part_ml [[buffer(7)]],
    uint3 tgid [[threadgroup_position_in_grid]],
    uint lid [[thread_index_in_threadgroup]],
    uint simd_gid [[simdgroup_index_in_threadgroup]],
    uint simd_lid [[thread_index_in_simdgroup]]) {
  using namespace mlxk_attn;
  constexpr int NSG = 4; // simdgroups
  constexpr int threads = NSG * 32;
  constexpr int DL = (D + 31) / 32; // elements of a row per lane

  threadgroup float4 q_rows[RT * D / 4]; // pre-scaled query rows
  threadgroup float p_buf[NSG * RT * 32]; // [simdgroup][row][key of the block]
  threadgroup float o_rows[RT * D]; // the combined accumulators
  threadgroup float m_sg[NSG * RT];
  threadgroup float l_sg[NSG * RT];

  const int qL = args.qL;
  const int kL = args.kL;
  const int G = args.Hq / args.Hkv;
  const int rows = G * qL; // (head of the group, query) pairs of this KV head
  const int split = int(tgid.x);
  const int hkv = int(tgid.y);
  const int b = int(tgid.z) / args.row_tiles;
  const int r0 = (int(tgid.z) % args.row_tiles) * RT;

  // Row r of the tile: query head hq[r], query i[r]; valid while r0 + r < rows.
  int hq[RT];
  int qi[RT];
  MLXK_UNROLL
  for (int r = 0; r < RT; ++r) {
    const int gr = min(r0 + r, rows - 1);
    hq[r] = hkv * G + gr / qL;
    qi[r] = gr % qL;
  }

  for (int e = int(lid); e < RT * D; e += threads) {
    const int r = e / D;
    const int d = e % D;
    const int gr = r0 + r;
    float x = 0.0f;
    if (gr < rows) {
      const int h = hkv * G + gr / qL;
      x = float(q[((int64_t(b) * args.Hq + h) * qL + gr % qL) * D + d]) * args.qscale;
    }
    reinterpret_cast<threadgroup float*>(q_rows)[e] = x;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);

  device const T* kh = k + (int64_t(b) * args.Hkv + hkv) * kL * D;
  device const T* vh = v + (int64_t(b) * args.Hkv + hkv) * kL * D;
  const int k_begin = split * args.chunk;
  const int k_end = min(kL, k_begin + args.chunk);

  float m[RT];
  float l[RT]; // this lane's share of the sum
  float acc[RT][DL];
  MLXK_UNROLL
  for (int r = 0; r < RT; ++r) {
    m[r] = kNegInf;
    l[r] = 0.0f;
    MLXK_UNROLL
    for (int t = 0; t < DL; ++t) {
      acc[r][t] = 0.0f;
    }
  }
  const int p_sg = int(simd_gid) * RT * 32; // this simdgroup's part of p_buf

  for (int j0 = k_begin + int(simd_gid) * 32; j0 < k_end; j0 += NSG * 32) {
    // Scores of this lane's key for every row.
    const int j = j0 + int(simd_lid);
    const bool in = j < k_end;
    float s[RT];
    MLXK_UNROLL
    for (int r = 0; r < RT; ++r) {
      s[r] = 0.0f;
    }
    if (in) {
      device const T* kr = kh + int64_t(j) * D;
      for (int d = 0; d < D; d += 4) {
        const float4 kv = float4(float(kr[d]), float(kr[d + 1]), float(kr[d + 2]), float(kr[d + 3]));
        MLXK_UNROLL
        for (int r = 0; r < RT; ++r) {
          s[r] += dot(kv, q_rows[(r * D + d) / 4]);
        }
      }
    }
    MLXK_UNROLL
    for (int r = 0; r < RT; ++r) {
      const bool row_in = r0 + r < rows;
      const float sc = (in && row_in) ? masked_score(s[r], b, hq[r], qi[r], j, mask, args)
                                      : kNegInf;
      float m_new;
      bool live;
      const float alpha = softmax_step(m[r], simd_max(sc), m_new, live);
      m[r] = m_new;
      const float p = (live && in && row_in) ? exp2(sc - m_new) : 0.0f;
      l[r] = l[r] * alpha + p;
      MLXK_UNROLL
      for (int t = 0; t < DL; ++t) {
        acc[r][t] *= alpha;
      }
      p_buf[p_sg + r * 32 + int(simd_lid)] = p;
    }
    simdgroup_barrier(mem_flags::mem_threadgroup);

    // acc += p V over the block's keys; lanes over D.
    const int nk = min(32, k_end - j0);
    for (int jj = 0; jj < nk; ++jj) {
      device const T* vr = vh + int64_t(j0 + jj) * D;
      float vv[DL];
      MLXK_UNROLL
      for (int t = 0; t < DL; ++t) {
        const int d = t * 32 + int(simd_lid);
        vv[t] = (D % 32 == 0 || d < D) ? float(vr[d]) : 0.0f;
      }
      MLXK_UNROLL
      for (int r = 0; r < RT; ++r) {
        const float p = p_buf[p_sg + r * 32 + jj];
        MLXK_UNROLL
        for (int t = 0; t < DL; ++t) {
          acc[r][t] = fma(p, vv[t], acc[r][t]);
        }
      }
    }
    simdgroup_barrier(mem_flags::mem_threadgroup);
  }

  // Combine the simdgroups: maxima and sums first, then the accumulators one
  // simdgroup after another, each scaled to the common max.
  MLXK_UNROLL
  for (int r = 0; r < RT; ++r) {
    l[r] = simd_sum(l[r]);
  }
  if (simd_lid == 0) {
    MLXK_UNROLL
    for (int r = 0; r < RT; ++r) {
      m_sg[int(simd_gid) * RT + r] = m[r];
      l_sg[int(simd_gid) * RT + r] = l[r];
    }
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  float scale_own[RT];
  MLXK_UNROLL
  for (int r = 0; r < RT; ++r) {
    float M = kNegInf;
    MLXK_UNROLL
    for (int s = 0; s < NSG; ++s) {
      M = max(M, m_sg[s * RT + r]);
    }
    scale_own[r] = m[r] == kNegInf ? 0.0f : exp2(m[r] - M);
  }
  for (int s = 0; s < NSG; ++s) {
    if (int(simd_gid) == s) {
      MLXK_UNROLL
      for (int r = 0; r < RT; ++r) {
        MLXK_UNROLL
        for (int t = 0; t < DL; ++t) {
          const int d = t * 32 + int(simd_lid);
          if (D % 32 == 0 || d < D) {
            const float prev = s == 0 ? 0.0f : o_rows[r * D + d];
            o_rows[r * D + d] = prev + scale_own[r] * acc[r][t];
          }
        }
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }

  // Write: the output (one split) or this split's partial result.
  for (int e = int(lid); e < RT * D; e += threads) {
    const int r = e / D;
    const int d = e % D;
    const int gr = r0 + r;
    if (gr >= rows) {
      continue;
    }
    float M = kNegInf;
    for (int s = 0; s < NSG; ++s) {
      M = max(M, m_sg[s * RT + r]);
    }
    float L = 0.0f;
    for (int s = 0; s < NSG; ++s) {
      const float ms = m_sg[s * RT + r];
      L += ms == kNegInf ? 0.0f : exp2(ms - M) * l_sg[s * RT + r];
    }
    const int h = hkv * G + gr / qL;
    const int64_t n = (int64_t(b) * args.Hq + h) * qL + gr % qL; // output row
    if (args.splits == 1) {
      const float inv = kL == 0 ? 0.0f : 1.0f / L; // L = 0: all -inf, NaN as MLX
      out[n * D + d] = static_cast<T>(o_rows[e] * inv);
    } else {
      const int64_t slot = n * args.splits + split;
      part_acc[slot * D + d] = o_rows[e];
      if (d == 0) {
        part_ml[2 * slot] = M;
        part_ml[2 * slot + 1] = L;
      }
    }
  }
}

// ---------------------------------------------------------------------------
template <typename T, int D>
[[kernel]] void mlxk_attn_merge(
    device const float* part_acc [[buffer(0)]],
    device const float* part_ml [[buffer(1)]],
    device T* out [[buffer(2)]],
    constant MlxkAttnArgs& args [[buffer(3)]],
    uint3 tgid [[threadgroup_position_in_grid]],
    uint lid [[thread_index_in_threadgroup]]) {
  using namespace mlxk_attn;
  constexpr int threads = 32;
  const int S = args.splits;
  const int64_t n = int64_t(tgid.x); // output row (b, query head, query)
  device const float* ml = part_ml + n * S * 2;
  device const float* acc = part_acc + n * S * D;
  float M = kNegInf;
  for (int s = 0; s < S; ++s) {
    M = max(M, ml[2 * s]);
  }
  float L = 0.0f;
  for (int s = 0; s < S; ++s) {
    L += ml[2 * s] == kNegInf ? 0.0f : exp2(ml[2 * s] - M) * ml[2 * s + 1];
  }
  const float inv = 1.0f / L; // L = 0: all -inf, NaN as MLX
  for (int d = int(lid); d < D; d += threads) {
    float o = 0.0f;
    for (int s = 0; s < S; ++s) {
      const float w = ml[2 * s] == kNegInf ? 0.0f : exp2(ml[2 * s] - M);
      o = fma(w, acc[s * D + d], o);
    }
    out[n * D + d] = static_cast<T>(o * inv);
  }
}

// ---------------------------------------------------------------------------
// Instantiations: "mlxk_attn_<variant>_<dtype>_d<D>[_r<rows>]", the names
// csrc/metal/attn_plan.cpp builds.
#define MLXK_ATTN_D(T, tname, D)                                                              \
  mlxk_instantiate_kernel("mlxk_attn_prefill_" tname "_d" #D, mlxk_attn_prefill, T, D)        \
  mlxk_instantiate_kernel("mlxk_attn_decode_" tname "_d" #D "_r1", mlxk_attn_decode, T, D, 1) \
  mlxk_instantiate_kernel("mlxk_attn_decode_" tname "_d" #D "_r2", mlxk_attn_decode, T, D, 2) \
  mlxk_instantiate_kernel("mlxk_attn_decode_" tname "_d" #D "_r4", mlxk_attn_decode, T, D, 4) \
  mlxk_instantiate_kernel("mlxk_attn_decode_" tname "_d" #D "_r8", mlxk_attn_decode, T, D, 8) \
  mlxk_instantiate_kernel("mlxk_attn_merge_" tname "_d" #D, mlxk_attn_merge, T, D)

#define MLXK_ATTN_ALL_D(T, tname, unused) \
  MLXK_ATTN_D(T, tname, 64)               \
  MLXK_ATTN_D(T, tname, 80)               \
  MLXK_ATTN_D(T, tname, 96)               \
  MLXK_ATTN_D(T, tname, 128)              \
  MLXK_ATTN_D(T, tname, 256)

MLXK_FOR_EACH_FLOAT(MLXK_ATTN_ALL_D, 0)
