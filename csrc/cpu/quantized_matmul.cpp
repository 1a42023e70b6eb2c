// Native CPU kernels for the affine quantized matmul.
//
// Data layout (the packed format of mx.quantize):
//   transpose=true : w [N, K * bits / 32] uint32, scales/biases [N, K / gs]
//   transpose=false: w [K, N * bits / 32] uint32, scales/biases [K, N / gs]
//   Each uint32 holds 32 / bits values, the first in the lowest bits; value q
//   of group g stands for q * scales[g] + biases[g].
//   x [M, K] and out [M, N] are row-contiguous; all arithmetic is float32.
//
// Work mapping (see plan_cpu below):
//   transpose=true, M <= kFusedMaxRows ("fused mat-vec"): every thread owns a
//     contiguous range of output columns. Each weight row is unpacked and
//     dequantized 8 values at a time in registers and applied to all M rows of
//     x at once, so w is read from memory exactly once whatever M is.
//   transpose=true, larger M ("dequantize-then-GEMM"): every thread owns a
//     range of columns; it dequantizes kTileCols weight rows into a float
//     buffer (once per tile) and runs a register-blocked kTileRows x kTileCols
//     micro-kernel over all rows of x.
//   transpose=false: every thread owns a range of kChunkCols output columns; for
//     each k it dequantizes that slice of weight row k and adds x[m, k] times
//     it to the M accumulator rows (an axpy per row, vectorized over columns).
#include "cpu/quantized_matmul.h"

#include <algorithm>
#include <cstring>
#include <utility>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <vector>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"

#include "cpu/contiguous.h"
#include "debug.h"
#include "cpu/float_convert.h"

#include "cpu/thread_pool.h"

namespace mlx_kernels::cpu {

namespace {

// The vector width: 16 float32 lanes where the build targets AVX-512 (one zmm
// register), 8 otherwise (AVX2 ymm on x86, two NEON q registers on arm).
#if defined(__AVX512F__)
constexpr int kLanes = 16;
#else
constexpr int kLanes = 8;
#endif
typedef float vf __attribute__((vector_size(4 * kLanes)));
typedef uint32_t vu __attribute__((vector_size(4 * kLanes)));
// An unaligned view of memory as vf (x rows and scratch have 4-byte alignment).
typedef float vf_unaligned __attribute__((vector_size(4 * kLanes), aligned(4)));

inline vf load(const float* p) {
  return *reinterpret_cast<const vf_unaligned*>(p);
}
inline void store(float* p, vf v) {
  *reinterpret_cast<vf_unaligned*>(p) = v;
}
inline vf splat(float s) {
  return vf{} + s;
}
inline float hsum(vf v) {
  float s = 0.f;
  for (int i = 0; i < kLanes; ++i) {
    s += v[i];
  }
  return s;
}

// The words holding kLanes consecutive quantized values, one word per lane:
// lane i gets word i / (32 / bits). x86 gets a single permute; the generic
// version is left to the compiler.
template <int bits, size_t... I>
inline vu spread_words(const uint32_t* src, std::index_sequence<I...>) {
  constexpr int per_word = 32 / bits;
#if defined(__AVX512F__)
  static_assert(kLanes == 16);
  const __m128i packed = bits == 4
      ? _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src)) // 2 words
      : _mm_loadu_si128(reinterpret_cast<const __m128i*>(src)); // 4 words
  return (vu)_mm512_permutexvar_epi32(
      _mm512_set_epi32(int((kLanes - 1 - I) / per_word)...),
      _mm512_castsi128_si512(packed));
#elif defined(__AVX2__)
  static_assert(kLanes == 8);
  if constexpr (bits == 4) {
    return (vu)_mm256_set1_epi32(int(src[0]));
  } else {
    const __m128i packed = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src));
    return (vu)_mm256_permutevar8x32_epi32(
        _mm256_castsi128_si256(packed),
        _mm256_set_epi32(int((kLanes - 1 - I) / per_word)...));
  }
#else
  return vu{src[I / per_word]...};
#endif
}

// The kLanes quantized values starting at element `first` of a packed row, as
// floats. `first` is a multiple of kLanes, so the values fill whole words:
// lane i shifts its word right by (i % (32 / bits)) * bits.
template <int bits, size_t... I>
inline vf unpack_lanes(const uint32_t* src, std::index_sequence<I...> lanes) {
  constexpr uint32_t per_word = 32 / bits;
  constexpr vu shifts = {uint32_t((I % per_word) * bits)...};
  constexpr vu mask = {((void)I, (1u << bits) - 1)...};
  return __builtin_convertvector(
      (spread_words<bits>(src, lanes) >> shifts) & mask, vf);
}

template <int bits>
inline vf unpack(const uint32_t* row, int64_t first) {
  return unpack_lanes<bits>(
      row + first / (32 / bits), std::make_index_sequence<kLanes>{});
}

// Everything a kernel needs, as raw pointers (the arrays stay alive in the
// dispatched task).
template <typename T>
struct Problem {
  const float* x; // [M, K] float32 (converted when T is not float)
  const float* x_kernel_order; // fused mat-vec only: x in kernel order
  const float* x_group_sums; // fused mat-vec only: [M, K / group_size]
  const uint32_t* w;
  const T* scales;
  const T* biases;
  T* out; // [M, N]
  int64_t M, N, K;
  int group_size;
};

template <typename T>
inline void store_out(T* out, float v) {
  out[0] = from_float<T>(v);
}

// ---------------------------------------------------------------------------
// transpose=true, few rows: every weight is unpacked once and applied to all
// kRows rows, with the affine terms taken out of the inner loop:
//   out[m, n] = sum_g ( s[n, g] * sum_{k in g} q[n, k] x[m, k]
//                      + b[n, g] * sum_{k in g} x[m, k] ).
// The inner loop is then one unpack and one FMA per value and row. Bytes are
// widened straight into lanes, so for 4 bits one block of 2 * kLanes values
// yields the even-indexed values (low nibbles) in one vector and the odd ones
// (high nibbles) in another; x is stored in that order ("kernel order", see
// to_kernel_order) so that lanes line up.
// kLanes consecutive bytes, zero-extended to one uint32 lane each.
inline vu widen_bytes(const uint8_t* src) {
#if defined(__AVX512F__)
  return (vu)_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
#elif defined(__AVX2__)
  return (vu)_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src)));
#else
  typedef uint8_t vbytes __attribute__((vector_size(kLanes)));
  vbytes packed;
  std::memcpy(&packed, src, sizeof(packed));
  return __builtin_convertvector(packed, vu);
#endif
}

template <int bits>
constexpr int64_t fused_block() {
  return bits == 4 ? 2 * kLanes : kLanes;
}

template <int bits>
void to_kernel_order(const float* x, float* dst, int64_t K) {
  if constexpr (bits == 4) {
    for (int64_t k0 = 0; k0 < K; k0 += 2 * kLanes) {
      for (int i = 0; i < kLanes; ++i) {
        dst[k0 + i] = x[k0 + 2 * i];
        dst[k0 + kLanes + i] = x[k0 + 2 * i + 1];
      }
    }
  } else {
    std::memcpy(dst, x, sizeof(float) * K);
  }
}

// Columns [n, n + kCols) for rows [m0, m0 + kRows): each x vector loaded is
// used for kCols weight rows, each weight vector for kRows rows of x.
// scales / biases: rows n .. n + kCols - 1 of the scales and biases, as float.
template <int bits, int kRows, int kCols, typename T>
void fused_matvec_block(
    const Problem<T>& p,
    int64_t m0,
    int64_t n,
    const float* scales,
    const float* biases) {
  constexpr int64_t kBlock = fused_block<bits>();
  const int64_t K = p.K;
  const int64_t bytes_per_row = K * bits / 8;
  const int64_t groups = K / p.group_size;
  const float* x = p.x_kernel_order + m0 * K;
  const float* xsum = p.x_group_sums + m0 * groups;
  const uint8_t* wrow[kCols];
  for (int c = 0; c < kCols; ++c) {
    wrow[c] = reinterpret_cast<const uint8_t*>(p.w) + (n + c) * bytes_per_row;
  }
  vf total[kRows][kCols];
  float bias_total[kRows][kCols];
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) {
      total[r][c] = splat(0.f);
      bias_total[r][c] = 0.f;
    }
  }
  for (int64_t g = 0; g < groups; ++g) {
    vf dot[kRows][kCols];
    for (int r = 0; r < kRows; ++r) {
      for (int c = 0; c < kCols; ++c) {
        dot[r][c] = splat(0.f);
      }
    }
    const int64_t k_end = (g + 1) * p.group_size;
    for (int64_t k = g * p.group_size; k < k_end; k += kBlock) {
      // Pull the same stretch of the next kCols weight rows towards the cache
      // while this block computes: rows are short (K * bits / 8 bytes) streams
      // that the hardware prefetchers pick up late.
      for (int c = 0; c < kCols; ++c) {
        __builtin_prefetch(wrow[c] + kCols * bytes_per_row + k * bits / 8);
      }
      if constexpr (bits == 4) {
        vf lo[kCols], hi[kCols];
        for (int c = 0; c < kCols; ++c) {
          const vu wide = widen_bytes(wrow[c] + k / 2);
          lo[c] = __builtin_convertvector(wide & 0xFu, vf);
          hi[c] = __builtin_convertvector(wide >> 4, vf);
        }
        for (int r = 0; r < kRows; ++r) {
          const vf xa = load(x + r * K + k);
          const vf xb = load(x + r * K + k + kLanes);
          for (int c = 0; c < kCols; ++c) {
            // Two separate updates: each contracts to one FMA.
            dot[r][c] += lo[c] * xa;
            dot[r][c] += hi[c] * xb;
          }
        }
      } else {
        vf v[kCols];
        for (int c = 0; c < kCols; ++c) {
          v[c] = __builtin_convertvector(widen_bytes(wrow[c] + k), vf);
        }
        for (int r = 0; r < kRows; ++r) {
          const vf xa = load(x + r * K + k);
          for (int c = 0; c < kCols; ++c) {
            dot[r][c] += v[c] * xa;
          }
        }
      }
    }
    for (int c = 0; c < kCols; ++c) {
      const float s = scales[c * groups + g];
      const float b = biases[c * groups + g];
      for (int r = 0; r < kRows; ++r) {
        total[r][c] += dot[r][c] * s;
        bias_total[r][c] += b * xsum[r * groups + g];
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) {
      store_out(p.out + (m0 + r) * p.N + n + c, hsum(total[r][c]) + bias_total[r][c]);
    }
  }
}

template <int bits, int kRows, typename T>
void fused_matvec_rows(const Problem<T>& p, int64_t m0, int64_t n0, int64_t n1) {
  // Column blocking: as wide as the registers allow (kRows x kCols dot
  // products and as many running totals).
  constexpr int kCols = kRows <= 2 ? 4 : 2;
  const int64_t groups = p.K / p.group_size;
  // The block's scales and biases as float32, converted a block at a time
  // (rows n .. n + kCols - 1 are contiguous); float32 ones are used in place.
  std::vector<float> converted;
  if constexpr (!std::is_same_v<T, float>) {
    converted.resize(static_cast<size_t>(2 * kCols * groups));
  }
  auto block_affine = [&](int64_t n, int cols) -> std::pair<const float*, const float*> {
    if constexpr (std::is_same_v<T, float>) {
      return {p.scales + n * groups, p.biases + n * groups};
    } else {
      float* s = converted.data();
      float* b = s + kCols * groups;
      to_float_n(p.scales + n * groups, s, cols * groups);
      to_float_n(p.biases + n * groups, b, cols * groups);
      return {s, b};
    }
  };
  int64_t n = n0;
  for (; n + kCols <= n1; n += kCols) {
    auto [s, b] = block_affine(n, kCols);
    fused_matvec_block<bits, kRows, kCols>(p, m0, n, s, b);
  }
  for (; n < n1; ++n) {
    auto [s, b] = block_affine(n, 1);
    fused_matvec_block<bits, kRows, 1>(p, m0, n, s, b);
  }
}

constexpr int kFusedMaxRows = 8;

template <int bits, typename T>
void fused_matvec(const Problem<T>& p, int64_t n0, int64_t n1) {
  for (int64_t m0 = 0; m0 < p.M; m0 += kFusedMaxRows) {
    switch (std::min<int64_t>(kFusedMaxRows, p.M - m0)) {
      case 1: fused_matvec_rows<bits, 1>(p, m0, n0, n1); break;
      case 2: fused_matvec_rows<bits, 2>(p, m0, n0, n1); break;
      case 3: fused_matvec_rows<bits, 3>(p, m0, n0, n1); break;
      case 4: fused_matvec_rows<bits, 4>(p, m0, n0, n1); break;
      case 5: fused_matvec_rows<bits, 5>(p, m0, n0, n1); break;
      case 6: fused_matvec_rows<bits, 6>(p, m0, n0, n1); break;
      case 7: fused_matvec_rows<bits, 7>(p, m0, n0, n1); break;
      default: fused_matvec_rows<bits, 8>(p, m0, n0, n1); break;
    }
  }
}

// ---------------------------------------------------------------------------
// transpose=true, many rows: dequantize kTileCols weight rows once, then a
// kTileRows x kTileCols register-blocked micro-kernel over all rows of x.
constexpr int kTileRows = 4;
constexpr int kTileCols = 4;

template <int bits, typename T>
void dequantize_row(const Problem<T>& p, int64_t n, float* dst) {
  const int64_t words_per_row = p.K * bits / 32;
  const int64_t groups = p.K / p.group_size;
  const uint32_t* wrow = p.w + n * words_per_row;
  for (int64_t g = 0; g < groups; ++g) {
    const vf s = splat(to_float(p.scales[n * groups + g]));
    const vf b = splat(to_float(p.biases[n * groups + g]));
    for (int64_t k = g * p.group_size; k < (g + 1) * p.group_size; k += kLanes) {
      store(dst + k, unpack<bits>(wrow, k) * s + b);
    }
  }
}

template <int kRows, int kCols, typename T>
void micro_kernel(
    const Problem<T>& p, const float* wtile, int64_t m0, int64_t n0) {
  const int64_t K = p.K;
  vf acc[kRows][kCols];
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) {
      acc[r][c] = splat(0.f);
    }
  }
  const float* x = p.x + m0 * K;
  for (int64_t k = 0; k < K; k += kLanes) {
    vf wv[kCols];
    for (int c = 0; c < kCols; ++c) {
      wv[c] = load(wtile + c * K + k);
    }
    for (int r = 0; r < kRows; ++r) {
      const vf xv = load(x + r * K + k);
      for (int c = 0; c < kCols; ++c) {
        acc[r][c] += xv * wv[c];
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) {
      store_out(p.out + (m0 + r) * p.N + n0 + c, hsum(acc[r][c]));
    }
  }
}

template <int kCols, typename T>
void micro_kernel_rows(
    const Problem<T>& p, const float* wtile, int64_t m0, int rows, int64_t n0) {
  switch (rows) {
    case 1: micro_kernel<1, kCols>(p, wtile, m0, n0); break;
    case 2: micro_kernel<2, kCols>(p, wtile, m0, n0); break;
    case 3: micro_kernel<3, kCols>(p, wtile, m0, n0); break;
    default: micro_kernel<4, kCols>(p, wtile, m0, n0); break;
  }
}

template <int bits, typename T>
void dequant_gemm(const Problem<T>& p, int64_t n0, int64_t n1) {
  std::vector<float> wtile(static_cast<size_t>(kTileCols * p.K));
  for (int64_t n = n0; n < n1; n += kTileCols) {
    const int cols = static_cast<int>(std::min<int64_t>(kTileCols, n1 - n));
    for (int c = 0; c < cols; ++c) {
      dequantize_row<bits>(p, n + c, wtile.data() + c * p.K);
    }
    for (int64_t m = 0; m < p.M; m += kTileRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kTileRows, p.M - m));
      switch (cols) {
        case 1: micro_kernel_rows<1>(p, wtile.data(), m, rows, n); break;
        case 2: micro_kernel_rows<2>(p, wtile.data(), m, rows, n); break;
        case 3: micro_kernel_rows<3>(p, wtile.data(), m, rows, n); break;
        default: micro_kernel_rows<4>(p, wtile.data(), m, rows, n); break;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// transpose=false: out[m, n0:n1] = sum_k x[m, k] * W[k, n0:n1]; the slice of
// weight row k is dequantized once and applied to every row of x. Rows of x
// are taken kAxpyRows at a time so the accumulators stay in cache.
constexpr int64_t kChunkCols = 256; // a multiple of every group size
constexpr int64_t kAxpyRows = 64;

template <int bits, typename T>
void dequant_axpy(const Problem<T>& p, int64_t n0, int64_t n1) {
  const int64_t cols = n1 - n0;
  const int64_t words_per_row = p.N * bits / 32;
  const int64_t groups_per_row = p.N / p.group_size;
  std::vector<float> wrow(static_cast<size_t>(cols));
  std::vector<float> acc(static_cast<size_t>(std::min(p.M, kAxpyRows) * cols));
  for (int64_t m0 = 0; m0 < p.M; m0 += kAxpyRows) {
    const int64_t rows = std::min(kAxpyRows, p.M - m0);
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int64_t k = 0; k < p.K; ++k) {
      const uint32_t* w = p.w + k * words_per_row;
      for (int64_t g = n0 / p.group_size; g < n1 / p.group_size; ++g) {
        const vf s = splat(to_float(p.scales[k * groups_per_row + g]));
        const vf b = splat(to_float(p.biases[k * groups_per_row + g]));
        for (int64_t n = g * p.group_size; n < (g + 1) * p.group_size; n += kLanes) {
          store(wrow.data() + (n - n0), unpack<bits>(w, n) * s + b);
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        const vf xv = splat(p.x[(m0 + r) * p.K + k]);
        float* a = acc.data() + r * cols;
        for (int64_t j = 0; j < cols; j += kLanes) {
          store(a + j, load(a + j) + xv * load(wrow.data() + j));
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < cols; ++j) {
        store_out(p.out + (m0 + r) * p.N + n0 + j, acc[r * cols + j]);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// The launch plan: which kernel, and how the output columns are split.
enum class CpuKernel { FusedMatvec, DequantGemm, DequantAxpy };

struct CpuPlan {
  CpuKernel kernel;
  int64_t cols_per_task; // a multiple of the kernel's column granularity
  int num_tasks;
};

CpuPlan plan_cpu(const QmmParams& q, int threads) {
  CpuPlan plan;
  int64_t granule;
  if (!q.transpose) {
    plan.kernel = CpuKernel::DequantAxpy;
    granule = std::min<int64_t>(kChunkCols, q.N);
  } else if (q.M <= kFusedMaxRows) {
    plan.kernel = CpuKernel::FusedMatvec;
    granule = 8;
  } else {
    plan.kernel = CpuKernel::DequantGemm;
    granule = kTileCols;
  }
  // Small problems are not worth waking the pool for.
  const double work = double(q.M) * double(q.N) * double(q.K);
  const int useful = work < (1 << 18) ? 1 : threads;
  // Two tasks per thread balance uneven progress without much overhead.
  const int64_t want = int64_t(useful) * (useful > 1 ? 2 : 1);
  int64_t per = (q.N + want - 1) / want;
  per = std::max(granule, (per + granule - 1) / granule * granule);
  if (!q.transpose) {
    // transpose=false chunks must keep whole quantization groups together.
    per = std::min(per, kChunkCols);
    per = std::max<int64_t>(q.group_size, per / q.group_size * q.group_size);
  }
  plan.cols_per_task = per;
  plan.num_tasks = static_cast<int>((q.N + per - 1) / per);
  return plan;
}

template <int bits, typename T>
void run_plan(const CpuPlan& plan, const Problem<T>& p) {
  parallel_for(plan.num_tasks, [&](int task) {
    const int64_t n0 = task * plan.cols_per_task;
    const int64_t n1 = std::min(p.N, n0 + plan.cols_per_task);
    switch (plan.kernel) {
      case CpuKernel::FusedMatvec: fused_matvec<bits>(p, n0, n1); break;
      case CpuKernel::DequantGemm: dequant_gemm<bits>(p, n0, n1); break;
      case CpuKernel::DequantAxpy: dequant_axpy<bits>(p, n0, n1); break;
    }
  });
}

template <typename T>
void run_typed(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    mx::array& out,
    const QmmParams& q) {
  const int64_t MK = q.M * q.K;
  std::vector<float> x_converted;
  const float* xf;
  if constexpr (std::is_same_v<T, float>) {
    xf = x.data<float>();
  } else {
    x_converted.resize(static_cast<size_t>(MK));
    const T* src = x.data<T>();
    for (int64_t i = 0; i < MK; ++i) {
      x_converted[i] = to_float(src[i]);
    }
    xf = x_converted.data();
  }
  Problem<T> p{
      xf,
      nullptr,
      nullptr,
      w.data<uint32_t>(),
      scales.data<T>(),
      biases.data<T>(),
      out.data<T>(),
      q.M,
      q.N,
      q.K,
      q.group_size};
  CpuPlan plan = plan_cpu(q, num_threads());
  std::vector<float> x_kernel_order, x_group_sums;
  if (plan.kernel == CpuKernel::FusedMatvec) {
    const int64_t groups = q.K / q.group_size;
    x_kernel_order.resize(static_cast<size_t>(MK));
    x_group_sums.resize(static_cast<size_t>(q.M * groups));
    for (int64_t m = 0; m < q.M; ++m) {
      const float* row = xf + m * q.K;
      if (q.bits == 4) {
        to_kernel_order<4>(row, x_kernel_order.data() + m * q.K, q.K);
      } else {
        to_kernel_order<8>(row, x_kernel_order.data() + m * q.K, q.K);
      }
      for (int64_t g = 0; g < groups; ++g) {
        float sum = 0.f;
        for (int64_t k = g * q.group_size; k < (g + 1) * q.group_size; ++k) {
          sum += row[k];
        }
        x_group_sums[m * groups + g] = sum;
      }
    }
    p.x_kernel_order = x_kernel_order.data();
    p.x_group_sums = x_group_sums.data();
  }
  if (q.bits == 4) {
    run_plan<4>(plan, p);
  } else {
    run_plan<8>(plan, p);
  }
}

} // namespace

void quantized_matmul(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    mx::array& out,
    const QmmParams& q,
    mx::Stream stream) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
  if (out.size() == 0) {
    return;
  }
  auto& enc = mx::cpu::get_command_encoder(stream);
  // Non-contiguous inputs (slices, transposed views) are gathered into
  // row-contiguous temporaries; contiguous ones are used in place.
  std::vector<mx::array> temporaries;
  auto x_c = row_contiguous(x, enc, temporaries);
  auto w_c = row_contiguous(w, enc, temporaries);
  auto s_c = row_contiguous(scales, enc, temporaries);
  auto b_c = row_contiguous(biases, enc, temporaries);
  enc.set_input_array(x_c);
  enc.set_input_array(w_c);
  enc.set_input_array(s_c);
  enc.set_input_array(b_c);
  enc.set_output_array(out);
  enc.dispatch([x = mx::array::unsafe_weak_copy(x_c),
                w = mx::array::unsafe_weak_copy(w_c),
                s = mx::array::unsafe_weak_copy(s_c),
                b = mx::array::unsafe_weak_copy(b_c),
                out = mx::array::unsafe_weak_copy(out),
                q]() mutable {
    if (poison_outputs()) {
      std::memset(out.data<void>(), 0xFF, out.nbytes());
    }
    if (q.K == 0) {
      std::memset(out.data<void>(), 0, out.nbytes());
      return;
    }
    switch (out.dtype()) {
      case mx::float32: run_typed<float>(x, w, s, b, out, q); break;
      case mx::float16: run_typed<mx::float16_t>(x, w, s, b, out, q); break;
      case mx::bfloat16: run_typed<mx::bfloat16_t>(x, w, s, b, out, q); break;
      default: break; // unreachable: the op validated the dtype
    }
  });
  enc.add_temporaries(std::move(temporaries));
}

} // namespace mlx_kernels::cpu
