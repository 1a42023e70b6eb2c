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
#include <vector>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"

#include "cpu/contiguous.h"
#include "debug.h"
#include "cpu/float_convert.h"
#include "cpu/thread_pool.h"

namespace mlx_kernels::cpu {

namespace {

// Eight float32 lanes: AVX2/AVX-512VL ymm on x86, two NEON q registers on arm.
typedef float v8f __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
// An unaligned view of memory as v8f (x rows and scratch have 4-byte alignment).
typedef float v8f_unaligned __attribute__((vector_size(32), aligned(4)));

inline v8f load8(const float* p) {
  return *reinterpret_cast<const v8f_unaligned*>(p);
}
inline void store8(float* p, v8f v) {
  *reinterpret_cast<v8f_unaligned*>(p) = v;
}
inline v8f splat(float s) {
  return v8f{s, s, s, s, s, s, s, s};
}
inline float hsum(v8f v) {
  float s = 0.f;
  for (int i = 0; i < 8; ++i) {
    s += v[i];
  }
  return s;
}

// The 8 quantized values starting at element `first` of a packed row, as floats
// (first is a multiple of 8, so the values never straddle a word boundary).
template <int bits>
inline v8f unpack8(const uint32_t* row, int64_t first) {
  if constexpr (bits == 4) {
    uint32_t q = row[first / 8];
    v8u v = {q, q, q, q, q, q, q, q};
    v = (v >> v8u{0, 4, 8, 12, 16, 20, 24, 28}) & 0xFu;
    return __builtin_convertvector(v, v8f);
  } else {
    static_assert(bits == 8);
    uint32_t a = row[first / 4], b = row[first / 4 + 1];
    v8u v = {a, a, a, a, b, b, b, b};
    v = (v >> v8u{0, 8, 16, 24, 0, 8, 16, 24}) & 0xFFu;
    return __builtin_convertvector(v, v8f);
  }
}

// Everything a kernel needs, as raw pointers (the arrays stay alive in the
// dispatched task).
template <typename T>
struct Problem {
  const float* x; // [M, K] float32 (converted when T is not float)
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
// kRows rows. kUnroll independent accumulators per row hide the FMA latency.
template <int bits, int kRows, typename T>
void fused_matvec_rows(const Problem<T>& p, int64_t m0, int64_t n0, int64_t n1) {
  constexpr int kUnroll = kRows <= 1 ? 4 : (kRows <= 3 ? 2 : 1);
  constexpr int kStep = 8 * kUnroll;
  const int64_t K = p.K;
  const int64_t words_per_row = K * bits / 32;
  const int64_t groups = K / p.group_size;
  const float* x = p.x + m0 * K;
  for (int64_t n = n0; n < n1; ++n) {
    const uint32_t* wrow = p.w + n * words_per_row;
    const T* srow = p.scales + n * groups;
    const T* brow = p.biases + n * groups;
    v8f acc[kRows][kUnroll];
    for (int r = 0; r < kRows; ++r) {
      for (int u = 0; u < kUnroll; ++u) {
        acc[r][u] = splat(0.f);
      }
    }
    for (int64_t g = 0; g < groups; ++g) {
      const v8f s = splat(to_float(srow[g]));
      const v8f b = splat(to_float(brow[g]));
      const int64_t k_end = (g + 1) * p.group_size;
      for (int64_t k = g * p.group_size; k < k_end; k += kStep) {
        for (int u = 0; u < kUnroll; ++u) {
          const v8f wv = unpack8<bits>(wrow, k + 8 * u) * s + b;
          for (int r = 0; r < kRows; ++r) {
            acc[r][u] += wv * load8(x + r * K + k + 8 * u);
          }
        }
      }
    }
    for (int r = 0; r < kRows; ++r) {
      v8f total = acc[r][0];
      for (int u = 1; u < kUnroll; ++u) {
        total += acc[r][u];
      }
      store_out(p.out + (m0 + r) * p.N + n, hsum(total));
    }
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
    const v8f s = splat(to_float(p.scales[n * groups + g]));
    const v8f b = splat(to_float(p.biases[n * groups + g]));
    for (int64_t k = g * p.group_size; k < (g + 1) * p.group_size; k += 8) {
      store8(dst + k, unpack8<bits>(wrow, k) * s + b);
    }
  }
}

template <int kRows, int kCols, typename T>
void micro_kernel(
    const Problem<T>& p, const float* wtile, int64_t m0, int64_t n0) {
  const int64_t K = p.K;
  v8f acc[kRows][kCols];
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) {
      acc[r][c] = splat(0.f);
    }
  }
  const float* x = p.x + m0 * K;
  for (int64_t k = 0; k < K; k += 8) {
    v8f wv[kCols];
    for (int c = 0; c < kCols; ++c) {
      wv[c] = load8(wtile + c * K + k);
    }
    for (int r = 0; r < kRows; ++r) {
      const v8f xv = load8(x + r * K + k);
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
        const v8f s = splat(to_float(p.scales[k * groups_per_row + g]));
        const v8f b = splat(to_float(p.biases[k * groups_per_row + g]));
        for (int64_t n = g * p.group_size; n < (g + 1) * p.group_size; n += 8) {
          store8(wrow.data() + (n - n0), unpack8<bits>(w, n) * s + b);
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        const v8f xv = splat(p.x[(m0 + r) * p.K + k]);
        float* a = acc.data() + r * cols;
        for (int64_t j = 0; j < cols; j += 8) {
          store8(a + j, load8(a + j) + xv * load8(wrow.data() + j));
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
      w.data<uint32_t>(),
      scales.data<T>(),
      biases.data<T>(),
      out.data<T>(),
      q.M,
      q.N,
      q.K,
      q.group_size};
  CpuPlan plan = plan_cpu(q, num_threads());
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
