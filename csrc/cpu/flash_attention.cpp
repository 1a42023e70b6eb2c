// Native CPU kernel for attention: a tiled online softmax (flash attention).
//
// Data layout:
//   q [B, Hq, qL, D], k and v [B, Hkv, kL, D] are read in place through their
//   strides: slices of a KV cache (k_cache[:, :, :kL]) and transposed views
//   (x.reshape(B, L, H, D).transpose(0, 2, 1, 3)) need no copy. Only an input
//   whose last axis is not contiguous is gathered first (contiguous.h).
//   The array masks arrive as a broadcast view [B, Hq, qL, kL] and are read
//   through its strides (zero on broadcast axes), never materialised.
//   out [B, Hq, qL, D] is row-contiguous. All arithmetic is float32.
//
// Work mapping:
//   One task = (batch b, KV head h, block of Tq query positions, chunk of
//   keys). Its R = G * Tq rows are those Tq queries of all G = Hq / Hkv query
//   heads that share KV head h, so every K/V tile is loaded (and converted to
//   float) once for the whole group. For each tile of kTk keys:
//     S[R, kTk]  = Q[R, D] K_tile^T    (Q pre-scaled by scale * log2(e))
//     mask S; running row max m and sum l; Acc rows rescaled when m grows
//     Acc[R, D] += exp2(S - m) V_tile
//   and out = Acc / l at the end. Scratch per thread: Q and Acc (R x D), S
//   (R x kTk), one K tile and one V tile; never a qL x kL matrix.
//   Causal: keys above the diagonal of a query block are never visited.
//   Tasks are spread over the pool with parallel_for, the most expensive
//   (last, under a causal mask) query blocks first.
//   Decode (few query rows, so few tasks): when B * Hkv * query blocks cannot
//   keep every core busy, the keys are split into chunks too; each chunk task
//   leaves its partial (m, l, Acc) in a buffer, and a second pass merges them.
//
// Inner loops (GCC vector extensions, 16 float32 lanes = one AVX-512 register):
//   S with many rows: the K tile is transposed to [D, kTk] so that a 6 x 64
//     block of scores accumulates in 24 registers, one broadcast q value per
//     step (no horizontal sums).
//   S with few rows (decode): dot products of q rows with K rows read in
//     place (float32) or converted once per tile (float16, bfloat16).
//   P V: a 4 x (64 to 96) block of Acc in registers, one V row per step.
//   exp2: a polynomial on 16 lanes.
//
// Masked scores (boolean and causal masks) become the lowest float32, as MLX
// fills them with finfo.min: a row whose keys are all masked gets uniform
// weights, i.e. the mean of v, exactly as mx.fast.scaled_dot_product_attention
// (also for the rows with no key under a causal mask when qL > kL). An
// additive mask that is -inf on a whole row gives NaN there, as in MLX.
#include "cpu/flash_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"

#include "cpu/contiguous.h"
#include "cpu/float_convert.h"
#include "cpu/thread_pool.h"
#include "debug.h"

#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

namespace mlx_kernels::cpu {

namespace {

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
// Unaligned views of memory (rows of q, k, v and scratch are 2- or 4-byte aligned).
typedef float v16f_unaligned __attribute__((vector_size(64), aligned(4)));
typedef uint16_t v16h_unaligned __attribute__((vector_size(32), aligned(2)));
typedef uint16_t v16h __attribute__((vector_size(32)));

constexpr int kTk = 64; // keys per tile (4 vectors)
constexpr int kRowsTarget = 64; // query rows per task in prefill
constexpr int kTransposedMinRows = 8; // below: the dot-product form of S
constexpr int kMinSplitKeys = 256; // smallest key chunk of a split task
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kMasked = std::numeric_limits<float>::lowest();
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline v16f load16(const float* p) {
  return *reinterpret_cast<const v16f_unaligned*>(p);
}
inline void store16(float* p, v16f v) {
  *reinterpret_cast<v16f_unaligned*>(p) = v;
}
inline v16f splat(float s) {
  return v16f{} + s;
}

inline v16f load16(const mx::float16_t* p) {
#if defined(__AVX512F__)
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return (v16f)_mm512_cvtph_ps(h);
#elif defined(__F16C__)
  __m256 a = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  __m256 b = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
  v16f r;
  std::memcpy(&r, &a, 32);
  std::memcpy(reinterpret_cast<char*>(&r) + 32, &b, 32);
  return r;
#else
  v16f r;
  for (int i = 0; i < 16; ++i) {
    r[i] = to_float(p[i]);
  }
  return r;
#endif
}

inline v16f load16(const mx::bfloat16_t* p) {
  v16h h = *reinterpret_cast<const v16h_unaligned*>(p);
  v16u w = __builtin_convertvector(h, v16u) << 16;
  return (v16f)w;
}

inline float hsum(v16f v) {
  v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
      __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  v4f b = __builtin_shufflevector(a, a, 0, 1, 2, 3) +
      __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

inline v16f vmax(v16f a, v16f b) {
  return a > b ? a : b;
}

inline float hmax(v16f v) {
  float m = v[0];
  for (int i = 1; i < 16; ++i) {
    m = std::max(m, v[i]);
  }
  return m;
}

// 2^x on 16 lanes for x <= 0 (the softmax exponents): 2^n * 2^f with
// n = round(x), f in [-0.5, 0.5], and 2^f = e^(f ln 2) by its Taylor
// polynomial of degree 7 (relative error < 2e-7). Exactly 0 below -126
// (and for -inf); NaN stays NaN.
inline v16f exp2v(v16f x) {
  const v16f lo = splat(-126.f);
  const v16f xc = x < lo ? lo : x;
  const v16i n = __builtin_convertvector(xc + 128.5f, v16i) - 128; // floor(xc + 0.5)
  const v16f f = xc - __builtin_convertvector(n, v16f);
  v16f p = splat(1.5252733804059838e-05f);
  p = p * f + 1.5403530393381606e-04f;
  p = p * f + 1.3333558146428441e-03f;
  p = p * f + 9.618129107628477e-03f;
  p = p * f + 5.5504108664821576e-02f;
  p = p * f + 2.402265069591007e-01f;
  p = p * f + 6.931471805599453e-01f;
  p = p * f + 1.f;
  const v16f two_n = (v16f)((n + 127) << 23);
  v16f r = p * two_n;
  r = x < lo ? splat(0.f) : r;
  return x != x ? x : r;
}

// Everything a task needs, as raw pointers and strides (in elements).
template <typename T>
struct Problem {
  const T* q;
  const T* k;
  const T* v;
  T* out;
  const bool* mask_bool; // AttnMask::Bool
  const T* mask_add; // AttnMask::Additive
  int64_t qs[3], ks[3], vs[3]; // strides of axes 0..2 (axis 3 has stride 1)
  int64_t ms[4]; // mask strides
  int B, Hq, Hkv, G, qL, kL, D;
  float qscale; // scale * log2(e)
  AttnMask mask;
  // launch plan
  int Tq; // query positions per task
  int nqb; // query blocks
  int nsplit; // key chunks per (b, h, query block)
  int chunk; // keys per chunk (a multiple of kTk)
  int rows_max; // G * Tq
  float* partial; // nsplit > 1: [base task][split][m, l, Acc] slots
  int64_t slot; // floats per slot
};

// Per-thread scratch, grown as needed and kept for the next call.
float* scratch(size_t floats) {
  thread_local std::vector<float> buf;
  if (buf.size() < floats) {
    buf.resize(floats);
  }
  return buf.data();
}

// --------------------------------------------------------------------------
// S = Q K^T, many rows: KT is the tile transposed, [D][kTk].
template <int MR>
inline void qk_rows_transposed(const float* Q, int D, const float* KT, float* S) {
  v16f acc[MR][4];
  for (int r = 0; r < MR; ++r) {
    for (int u = 0; u < 4; ++u) {
      acc[r][u] = splat(0.f);
    }
  }
  for (int d = 0; d < D; ++d) {
    const float* kt = KT + d * kTk;
    const v16f k0 = load16(kt), k1 = load16(kt + 16), k2 = load16(kt + 32),
               k3 = load16(kt + 48);
    for (int r = 0; r < MR; ++r) {
      const v16f qv = splat(Q[r * D + d]);
      acc[r][0] += qv * k0;
      acc[r][1] += qv * k1;
      acc[r][2] += qv * k2;
      acc[r][3] += qv * k3;
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int u = 0; u < 4; ++u) {
      store16(S + r * kTk + 16 * u, acc[r][u]);
    }
  }
}

void qk_transposed(const float* Q, int R, int D, const float* KT, float* S) {
  int r = 0;
  for (; r + 6 <= R; r += 6) {
    qk_rows_transposed<6>(Q + r * D, D, KT, S + r * kTk);
  }
  switch (R - r) {
    case 1: qk_rows_transposed<1>(Q + r * D, D, KT, S + r * kTk); break;
    case 2: qk_rows_transposed<2>(Q + r * D, D, KT, S + r * kTk); break;
    case 3: qk_rows_transposed<3>(Q + r * D, D, KT, S + r * kTk); break;
    case 4: qk_rows_transposed<4>(Q + r * D, D, KT, S + r * kTk); break;
    case 5: qk_rows_transposed<5>(Q + r * D, D, KT, S + r * kTk); break;
    default: break;
  }
}

// S = Q K^T, few rows: dot products with K rows at kp + c * kstride.
void qk_dot(
    const float* Q, int R, int D, const float* kp, int64_t kstride, int nk, float* S) {
  int c = 0;
  for (; c + 4 <= nk; c += 4) {
    const float* k0 = kp + c * kstride;
    const float* k1 = k0 + kstride;
    const float* k2 = k1 + kstride;
    const float* k3 = k2 + kstride;
    for (int r = 0; r < R; ++r) {
      const float* qr = Q + r * D;
      v16f a0 = splat(0.f), a1 = a0, a2 = a0, a3 = a0;
      for (int d = 0; d < D; d += 16) {
        const v16f qv = load16(qr + d);
        a0 += qv * load16(k0 + d);
        a1 += qv * load16(k1 + d);
        a2 += qv * load16(k2 + d);
        a3 += qv * load16(k3 + d);
      }
      float* s = S + r * kTk + c;
      s[0] = hsum(a0);
      s[1] = hsum(a1);
      s[2] = hsum(a2);
      s[3] = hsum(a3);
    }
  }
  for (; c < nk; ++c) {
    const float* kr = kp + c * kstride;
    for (int r = 0; r < R; ++r) {
      const float* qr = Q + r * D;
      v16f a = splat(0.f);
      for (int d = 0; d < D; d += 16) {
        a += load16(qr + d) * load16(kr + d);
      }
      S[r * kTk + c] = hsum(a);
    }
  }
}

// --------------------------------------------------------------------------
// Acc[R, D] += P[R, nk] V[nk, D]; V rows at vp + c * vstride.
template <int MR, int NV>
inline void pv_block(
    const float* P, const float* vp, int64_t vstride, int nk, float* Acc, int D) {
  v16f acc[MR][NV];
  for (int r = 0; r < MR; ++r) {
    for (int x = 0; x < NV; ++x) {
      acc[r][x] = load16(Acc + r * D + 16 * x);
    }
  }
  for (int c = 0; c < nk; ++c) {
    const float* vr = vp + c * vstride;
    v16f vv[NV];
    for (int x = 0; x < NV; ++x) {
      vv[x] = load16(vr + 16 * x);
    }
    for (int r = 0; r < MR; ++r) {
      const v16f pc = splat(P[r * kTk + c]);
      for (int x = 0; x < NV; ++x) {
        acc[r][x] += pc * vv[x];
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int x = 0; x < NV; ++x) {
      store16(Acc + r * D + 16 * x, acc[r][x]);
    }
  }
}

template <int NV>
void pv_chunks(
    const float* P, int R, const float* vp, int64_t vstride, int nk, float* Acc, int D) {
  for (int d0 = 0; d0 < D; d0 += 16 * NV) {
    for (int r0 = 0; r0 < R; r0 += 4) {
      const float* p = P + r0 * kTk;
      float* a = Acc + r0 * D + d0;
      switch (std::min(4, R - r0)) {
        case 1: pv_block<1, NV>(p, vp + d0, vstride, nk, a, D); break;
        case 2: pv_block<2, NV>(p, vp + d0, vstride, nk, a, D); break;
        case 3: pv_block<3, NV>(p, vp + d0, vstride, nk, a, D); break;
        default: pv_block<4, NV>(p, vp + d0, vstride, nk, a, D); break;
      }
    }
  }
}

void pv(const float* P, int R, const float* vp, int64_t vstride, int nk, float* Acc, int D) {
  switch (D) {
    case 80: pv_chunks<5>(P, R, vp, vstride, nk, Acc, D); break;
    case 96: pv_chunks<6>(P, R, vp, vstride, nk, Acc, D); break;
    default: pv_chunks<4>(P, R, vp, vstride, nk, Acc, D); break; // 64, 128, 256
  }
}

// --------------------------------------------------------------------------
// Online softmax over one tile: S rows become exp2(S - m_new); alpha[r] is
// the factor the row's accumulator must be rescaled by.
void softmax_tile(float* S, int R, int nk, float* m, float* l, float* alpha) {
  for (int r = 0; r < R; ++r) {
    float* s = S + r * kTk;
    for (int c = nk; c < kTk; ++c) {
      s[c] = kNegInf; // padding: weight exactly 0
    }
    v16f x[4];
    for (int u = 0; u < 4; ++u) {
      x[u] = load16(s + 16 * u);
    }
    const float m_tile = hmax(vmax(vmax(x[0], x[1]), vmax(x[2], x[3])));
    const float m_old = m[r];
    const float m_new = std::max(m_old, m_tile);
    if (m_new == kNegInf) {
      // Nothing but -inf so far (additive mask): no weight yet.
      std::memset(s, 0, sizeof(float) * kTk);
      alpha[r] = 1.f;
      continue;
    }
    const v16f vm = splat(m_new);
    v16f sum = splat(0.f);
    for (int u = 0; u < 4; ++u) {
      const v16f p = exp2v(x[u] - vm);
      store16(s + 16 * u, p);
      sum += p;
    }
    const float a = std::exp2(m_old - m_new); // 0 when m_old = -inf
    l[r] = l[r] * a + hsum(sum);
    m[r] = m_new;
    alpha[r] = a;
  }
}

template <typename T>
void apply_mask(
    const Problem<T>& p, float* S, int b, int h, int i0, int nq, int j0, int nk) {
  const int G = p.G;
  for (int g = 0; g < G; ++g) {
    for (int ii = 0; ii < nq; ++ii) {
      float* s = S + (g * nq + ii) * kTk;
      const int i = i0 + ii;
      switch (p.mask) {
        case AttnMask::None: return;
        case AttnMask::Causal: {
          // key j is visible iff j <= i + kL - qL
          const int first_masked = i + p.kL - p.qL + 1 - j0;
          for (int c = std::max(0, first_masked); c < nk; ++c) {
            s[c] = kMasked;
          }
          break;
        }
        case AttnMask::Bool: {
          const bool* mr = p.mask_bool + b * p.ms[0] + int64_t(h * G + g) * p.ms[1] +
              i * p.ms[2] + j0 * p.ms[3];
          for (int c = 0; c < nk; ++c) {
            if (!mr[c * p.ms[3]]) {
              s[c] = kMasked;
            }
          }
          break;
        }
        case AttnMask::Additive: {
          const T* mr = p.mask_add + b * p.ms[0] + int64_t(h * G + g) * p.ms[1] +
              i * p.ms[2] + j0 * p.ms[3];
          for (int c = 0; c < nk; ++c) {
            s[c] += to_float(mr[c * p.ms[3]]) * kLog2e;
          }
          break;
        }
      }
    }
  }
}

// Converts rows [j0, j0 + nk) of one K or V head to float32 [nk][D].
template <typename T>
void convert_rows(const T* base, int64_t stride, int j0, int nk, int D, float* dst) {
  for (int c = 0; c < nk; ++c) {
    const T* src = base + int64_t(j0 + c) * stride;
    for (int d = 0; d < D; d += 16) {
      store16(dst + c * D + d, load16(src + d));
    }
  }
}

// The same rows transposed: dst[d * kTk + c].
template <typename T>
void transpose_rows(const T* base, int64_t stride, int j0, int nk, int D, float* dst) {
  for (int c = 0; c < nk; ++c) {
    const T* src = base + int64_t(j0 + c) * stride;
    for (int d = 0; d < D; d += 16) {
      const v16f x = load16(src + d);
      for (int t = 0; t < 16; ++t) {
        dst[(d + t) * kTk + c] = x[t];
      }
    }
  }
}

// --------------------------------------------------------------------------
template <typename T>
void run_task(const Problem<T>& p, int task) {
  const int split = task % p.nsplit;
  int rest = task / p.nsplit;
  const int h = rest % p.Hkv;
  rest /= p.Hkv;
  const int b = rest % p.B;
  const int qb = p.nqb - 1 - rest / p.B; // the costliest (causal) blocks first
  const int G = p.G, D = p.D;
  const int i0 = qb * p.Tq;
  const int nq = std::min(p.Tq, p.qL - i0);
  const int R = G * nq;

  int j_begin = split * p.chunk;
  int j_end = std::min(p.kL, j_begin + p.chunk);
  const int offset = p.kL - p.qL;
  if (p.mask == AttnMask::Causal && i0 + offset >= 0) {
    // No row of this block is fully masked: skip the keys above the diagonal.
    j_end = std::min(j_end, i0 + nq + offset);
  }

  const int rows = p.rows_max;
  float* Q = scratch(
      size_t(rows) * (2 * D + kTk + 3) + size_t(2) * kTk * D);
  float* Acc = Q + rows * D;
  float* S = Acc + rows * D;
  float* m = S + rows * kTk;
  float* l = m + rows;
  float* alpha = l + rows;
  float* Kbuf = alpha + rows;
  float* Vbuf = Kbuf + kTk * D;

  // Q rows (g, ii) -> row g * nq + ii, pre-scaled.
  const v16f qscale = splat(p.qscale);
  for (int g = 0; g < G; ++g) {
    for (int ii = 0; ii < nq; ++ii) {
      const T* src = p.q + b * p.qs[0] + int64_t(h * G + g) * p.qs[1] +
          int64_t(i0 + ii) * p.qs[2];
      float* dst = Q + (g * nq + ii) * D;
      for (int d = 0; d < D; d += 16) {
        store16(dst + d, load16(src + d) * qscale);
      }
    }
  }
  std::fill(m, m + R, kNegInf);
  std::fill(l, l + R, 0.f);
  std::fill(Acc, Acc + size_t(R) * D, 0.f);

  const T* kbase = p.k + b * p.ks[0] + int64_t(h) * p.ks[1];
  const T* vbase = p.v + b * p.vs[0] + int64_t(h) * p.vs[1];
  const bool transposed = R >= kTransposedMinRows;

  for (int j0 = j_begin; j0 < j_end; j0 += kTk) {
    const int nk = std::min(kTk, j_end - j0);
    if (transposed) {
      transpose_rows(kbase, p.ks[2], j0, nk, D, Kbuf);
      qk_transposed(Q, R, D, Kbuf, S);
    } else if constexpr (std::is_same_v<T, float>) {
      qk_dot(Q, R, D, kbase + int64_t(j0) * p.ks[2], p.ks[2], nk, S);
    } else {
      convert_rows(kbase, p.ks[2], j0, nk, D, Kbuf);
      qk_dot(Q, R, D, Kbuf, D, nk, S);
    }
    apply_mask(p, S, b, h, i0, nq, j0, nk);
    softmax_tile(S, R, nk, m, l, alpha);
    for (int r = 0; r < R; ++r) {
      if (alpha[r] != 1.f) {
        const v16f a = splat(alpha[r]);
        float* acc = Acc + r * D;
        for (int d = 0; d < D; d += 16) {
          store16(acc + d, load16(acc + d) * a);
        }
      }
    }
    if constexpr (std::is_same_v<T, float>) {
      pv(S, R, vbase + int64_t(j0) * p.vs[2], p.vs[2], nk, Acc, D);
    } else {
      convert_rows(vbase, p.vs[2], j0, nk, D, Vbuf);
      pv(S, R, Vbuf, D, nk, Acc, D);
    }
  }

  if (p.nsplit == 1) {
    for (int g = 0; g < G; ++g) {
      for (int ii = 0; ii < nq; ++ii) {
        const int r = g * nq + ii;
        T* dst = p.out + ((int64_t(b) * p.Hq + h * G + g) * p.qL + i0 + ii) * D;
        const float inv = 1.f / l[r]; // l = 0: an all -inf row gives NaN, as MLX
        for (int d = 0; d < D; ++d) {
          dst[d] = from_float<T>(Acc[r * D + d] * inv);
        }
      }
    }
  } else {
    float* slot = p.partial + int64_t(task) * p.slot;
    std::memcpy(slot, m, sizeof(float) * R);
    std::memcpy(slot + rows, l, sizeof(float) * R);
    std::memcpy(slot + 2 * rows, Acc, sizeof(float) * R * D);
  }
}

// Combines the nsplit partial results of base task `base` into out.
template <typename T>
void merge_task(const Problem<T>& p, int base) {
  int rest = base;
  const int h = rest % p.Hkv;
  rest /= p.Hkv;
  const int b = rest % p.B;
  const int qb = p.nqb - 1 - rest / p.B;
  const int G = p.G, D = p.D, rows = p.rows_max;
  const int i0 = qb * p.Tq;
  const int nq = std::min(p.Tq, p.qL - i0);
  float* A = scratch(D);
  for (int g = 0; g < G; ++g) {
    for (int ii = 0; ii < nq; ++ii) {
      const int r = g * nq + ii;
      float M = kNegInf;
      for (int s = 0; s < p.nsplit; ++s) {
        M = std::max(M, p.partial[(int64_t(base) * p.nsplit + s) * p.slot + r]);
      }
      float L = 0.f;
      std::fill(A, A + D, 0.f);
      for (int s = 0; s < p.nsplit; ++s) {
        const float* slot = p.partial + (int64_t(base) * p.nsplit + s) * p.slot;
        const float ms = slot[r];
        if (ms == kNegInf) {
          continue; // nothing seen (or only -inf) in this chunk
        }
        const float w = std::exp2(ms - M);
        L += w * slot[rows + r];
        const v16f wv = splat(w);
        const float* acc = slot + 2 * rows + r * D;
        for (int d = 0; d < D; d += 16) {
          store16(A + d, load16(A + d) + wv * load16(acc + d));
        }
      }
      T* dst = p.out + ((int64_t(b) * p.Hq + h * G + g) * p.qL + i0 + ii) * D;
      const float inv = 1.f / L;
      for (int d = 0; d < D; ++d) {
        dst[d] = from_float<T>(A[d] * inv);
      }
    }
  }
}

template <typename T>
void run_typed(
    const mx::array& q,
    const mx::array& k,
    const mx::array& v,
    const mx::array* mask,
    mx::array& out,
    const AttnParams& a) {
  Problem<T> p{};
  p.q = q.data<T>();
  p.k = k.data<T>();
  p.v = v.data<T>();
  p.out = out.data<T>();
  for (int d = 0; d < 3; ++d) {
    p.qs[d] = q.strides()[d];
    p.ks[d] = k.strides()[d];
    p.vs[d] = v.strides()[d];
  }
  p.mask = a.mask;
  if (mask != nullptr) {
    for (int d = 0; d < 4; ++d) {
      p.ms[d] = mask->strides()[d];
    }
    if (a.mask == AttnMask::Bool) {
      p.mask_bool = mask->data<bool>();
    } else {
      p.mask_add = mask->data<T>();
    }
  }
  p.B = a.B;
  p.Hq = a.Hq;
  p.Hkv = a.Hkv;
  p.G = a.group();
  p.qL = a.qL;
  p.kL = a.kL;
  p.D = a.D;
  p.qscale = a.scale * kLog2e;

  // Launch plan.
  const int threads = num_threads();
  p.Tq = std::min(p.qL, std::max(1, kRowsTarget / p.G));
  p.nqb = (p.qL + p.Tq - 1) / p.Tq;
  p.rows_max = p.G * p.Tq;
  const int64_t base = int64_t(p.B) * p.Hkv * p.nqb;
  int nsplit = 1;
  if (base < 2 * threads && p.kL >= 2 * kMinSplitKeys) {
    const int want = static_cast<int>((4 * threads + base - 1) / base);
    nsplit = std::max(1, std::min(want, p.kL / kMinSplitKeys));
  }
  int chunk = (p.kL + nsplit - 1) / nsplit;
  chunk = (chunk + kTk - 1) / kTk * kTk;
  p.nsplit = (p.kL + chunk - 1) / chunk;
  p.chunk = chunk;

  std::vector<float> partial;
  if (p.nsplit > 1) {
    p.slot = int64_t(p.rows_max) * (p.D + 2);
    partial.resize(size_t(base * p.nsplit * p.slot));
    p.partial = partial.data();
  }
  const int num_tasks = static_cast<int>(base * p.nsplit);
  // Small problems are not worth waking the pool for.
  const double work = double(p.B) * p.Hq * p.qL * double(p.kL) * p.D;
  auto run = [&](int n, auto&& fn) {
    if (work < (1 << 17)) {
      for (int t = 0; t < n; ++t) {
        fn(t);
      }
    } else {
      parallel_for(n, fn);
    }
  };
  run(num_tasks, [&](int t) { run_task(p, t); });
  if (p.nsplit > 1) {
    run(static_cast<int>(base), [&](int t) { merge_task(p, t); });
  }
}

} // namespace

void flash_attention(
    const std::vector<mx::array>& inputs,
    mx::array& out,
    const AttnParams& params,
    mx::Stream stream) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
  auto& enc = mx::cpu::get_command_encoder(stream);
  // q, k and v are read through their strides; only a non-contiguous last
  // axis needs a gathered copy.
  std::vector<mx::array> temporaries;
  auto last_contiguous = [&](const mx::array& a) {
    return a.strides().back() == 1 || a.shape().back() == 1
        ? a
        : row_contiguous(a, enc, temporaries);
  };
  auto q = last_contiguous(inputs[0]);
  auto k = last_contiguous(inputs[1]);
  auto v = last_contiguous(inputs[2]);
  const bool has_mask = inputs.size() > 3;
  enc.set_input_array(q);
  enc.set_input_array(k);
  enc.set_input_array(v);
  if (has_mask) {
    enc.set_input_array(inputs[3]);
  }
  enc.set_output_array(out);
  enc.dispatch([q = mx::array::unsafe_weak_copy(q),
                k = mx::array::unsafe_weak_copy(k),
                v = mx::array::unsafe_weak_copy(v),
                mask = mx::array::unsafe_weak_copy(has_mask ? inputs[3] : inputs[0]),
                has_mask,
                out = mx::array::unsafe_weak_copy(out),
                params]() mutable {
    if (poison_outputs()) {
      std::memset(out.data<void>(), 0xFF, out.nbytes());
    }
    if (out.size() == 0) {
      return;
    }
    if (params.kL == 0) {
      // No keys: the weighted sum over nothing, as MLX (zeros).
      std::memset(out.data<void>(), 0, out.nbytes());
      return;
    }
    const mx::array* m = has_mask ? &mask : nullptr;
    switch (out.dtype()) {
      case mx::float32: run_typed<float>(q, k, v, m, out, params); break;
      case mx::float16: run_typed<mx::float16_t>(q, k, v, m, out, params); break;
      case mx::bfloat16: run_typed<mx::bfloat16_t>(q, k, v, m, out, params); break;
      default: break; // unreachable: the op validated the dtype
    }
  });
  enc.add_temporaries(std::move(temporaries));
}

} // namespace mlx_kernels::cpu
