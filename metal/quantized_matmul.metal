// Affine quantized matmul: y = x @ dequantize(w).T (transpose) or x @ dequantize(w).
//
// Data layout (the packed format of mx.quantize, mode "affine"):
//   transpose = true : w [N, K * bits / 32] uint32, scales / biases [N, K / group_size]
//   transpose = false: w [K, N * bits / 32] uint32, scales / biases [K, N / group_size]
//   A uint32 holds 32 / bits values, the first in the lowest bits; value q of
//   group g stands for q * scales[g] + biases[g]. x [M, K] and y [M, N] are
//   row-contiguous (the host makes them so). All arithmetic is float32.
//
// The host's launch plan (csrc/metal/qmm_plan.cpp) picks one of three kernels
// from M (the M-adaptive layout):
//
// mlxk_qmv<T, group_size, bits, rows>  (transpose, 1 <= M <= rows <= 8)
//   Threadgroup: 2 simdgroups x 32 lanes. A simdgroup owns 4 output columns
//   (rows of w); a lane owns a contiguous slice of K of 16 bytes of w per
//   column (32 values at 4 bits, 16 at 8 bits), so each lane makes one 16-byte
//   load per column per iteration and a simdgroup covers 32 slices per
//   iteration. The lane applies its slice of each column to all M rows of x
//   (held one float4 at a time), with the affine terms out of the inner loop:
//   sum_k (q s + b) x = s * sum_k q x + b * sum_k x. simd_sum reduces across
//   lanes. Grid: ceil(N / 8) threadgroups.
//
// mlxk_qvm<T, group_size, bits, rows>  (not transpose, 1 <= M <= rows <= 8)
//   One thread per word of a weight row (32 / bits consecutive output
//   columns), 64 threads per threadgroup, consecutive threads on consecutive
//   words (coalesced). Each thread walks all of K, dequantizes its word of row
//   k once and applies it to all M rows. Grid: ceil(N * bits / 32 / 64).
//
// mlxk_qmm<T, group_size, bits, transpose>  (M > 8)
//   Tiles of 32 (M) x 32 (N) x 32 (K); threadgroup: 4 simdgroups in a 2 x 2
//   layout, each owning a 16 x 16 block of the output as 2 x 2
//   simdgroup_matrix<float, 8, 8> accumulators. Per K step, all 128 threads
//   stage the x tile and the dequantized w tile in threadgroup memory (float,
//   rows padded by 4), then each simdgroup multiplies 8 x 8 fragments.
//   Rows past M and columns past N are zero-filled on load and skipped on
//   store. Grid: ceil(N / 32) x ceil(M / 32).
//
// Device traffic: bytes of w read per output element (K = 4096, 4 bits:
// w row = K / 2 = 2048 bytes):
//   M            1      4      8      16
//   kernel       qmv    qmv    qmv    qmm (ceil(M / 32) = 1 pass over w)
//   bytes/elem   K/2    K/8    K/16   K/32
//   K = 4096     2048   512    256    128
// (MLX's mat-vec for 2 <= M < 8 reads w once per row: K/2 per element.)

#include "mlxk_utils.h"

// ---------------------------------------------------------------------------
template <typename T, int group_size, int bits, int rows>
[[kernel]] void mlxk_qmv(
    device const uint32_t* w [[buffer(0)]],
    device const T* scales [[buffer(1)]],
    device const T* biases [[buffer(2)]],
    device const T* x [[buffer(3)]],
    device T* y [[buffer(4)]],
    constant int& M [[buffer(5)]],
    constant int& N [[buffer(6)]],
    constant int& K [[buffer(7)]],
    uint3 tgid [[threadgroup_position_in_grid]],
    uint simd_gid [[simdgroup_index_in_threadgroup]],
    uint simd_lid [[thread_index_in_simdgroup]]) {
  constexpr int simdgroups = 2;
  constexpr int cols = 4; // output columns per simdgroup
  constexpr int values_per_word = 32 / bits;
  constexpr int values_per_lane = 4 * values_per_word; // one uint4 of w
  constexpr int values_per_iter = 32 * values_per_lane;
  constexpr uint mask = (1u << bits) - 1u;

  const int words_per_row = K / values_per_word;
  const int groups_per_row = K / group_size;
  const int n0 = (int(tgid.x) * simdgroups + int(simd_gid)) * cols;

  float acc[rows][cols];
  MLXK_UNROLL
  for (int m = 0; m < rows; ++m) {
    MLXK_UNROLL
    for (int c = 0; c < cols; ++c) {
      acc[m][c] = 0.0f;
    }
  }

  for (int k0 = int(simd_lid) * values_per_lane; k0 < K; k0 += values_per_iter) {
    // This lane's slice of each column: one 16-byte load, one scale, one bias
    // (a slice never straddles a group: values_per_lane <= group_size).
    uint4 wq[cols];
    float sc[cols];
    float bi[cols];
    MLXK_UNROLL
    for (int c = 0; c < cols; ++c) {
      const int n = n0 + c;
      if (n < N) {
        wq[c] = *reinterpret_cast<device const uint4*>(
            w + n * words_per_row + k0 / values_per_word);
        sc[c] = float(scales[n * groups_per_row + k0 / group_size]);
        bi[c] = float(biases[n * groups_per_row + k0 / group_size]);
      } else {
        wq[c] = uint4(0);
        sc[c] = 0.0f;
        bi[c] = 0.0f;
      }
    }

    // Apply the slices to every row of x.
    MLXK_UNROLL
    for (int m = 0; m < rows; ++m) {
      if (m < M) {
        device const T* xm = x + m * K + k0;
        float xsum = 0.0f;
        float qx[cols];
        MLXK_UNROLL
        for (int c = 0; c < cols; ++c) {
          qx[c] = 0.0f;
        }
        MLXK_UNROLL
        for (int j = 0; j < values_per_lane; j += 4) {
          const float4 xv = float4(float(xm[j]), float(xm[j + 1]), float(xm[j + 2]), float(xm[j + 3]));
          xsum += xv.x + xv.y + xv.z + xv.w;
          const int shift = (j % values_per_word) * bits;
          MLXK_UNROLL
          for (int c = 0; c < cols; ++c) {
            const uint word = wq[c][j / values_per_word];
            const float4 q = float4(
                float((word >> shift) & mask),
                float((word >> (shift + bits)) & mask),
                float((word >> (shift + 2 * bits)) & mask),
                float((word >> (shift + 3 * bits)) & mask));
            qx[c] += dot(q, xv);
          }
        }
        MLXK_UNROLL
        for (int c = 0; c < cols; ++c) {
          acc[m][c] += sc[c] * qx[c] + bi[c] * xsum;
        }
      }
    }
  }

  // Reduce across lanes; lane 0 writes. (Every lane reaches every simd_sum:
  // the conditions below are uniform across the simdgroup.)
  MLXK_UNROLL
  for (int m = 0; m < rows; ++m) {
    if (m < M) {
      MLXK_UNROLL
      for (int c = 0; c < cols; ++c) {
        const float total = simd_sum(acc[m][c]);
        if (simd_lid == 0 && n0 + c < N) {
          y[m * N + n0 + c] = static_cast<T>(total);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
template <typename T, int group_size, int bits, int rows>
[[kernel]] void mlxk_qvm(
    device const uint32_t* w [[buffer(0)]],
    device const T* scales [[buffer(1)]],
    device const T* biases [[buffer(2)]],
    device const T* x [[buffer(3)]],
    device T* y [[buffer(4)]],
    constant int& M [[buffer(5)]],
    constant int& N [[buffer(6)]],
    constant int& K [[buffer(7)]],
    uint3 tgid [[threadgroup_position_in_grid]],
    uint lid [[thread_index_in_threadgroup]]) {
  constexpr int threads = 64;
  constexpr int values_per_word = 32 / bits;
  constexpr uint mask = (1u << bits) - 1u;

  const int words_per_row = N / values_per_word;
  const int groups_per_row = N / group_size;
  const int word = int(tgid.x) * threads + int(lid);
  if (word >= words_per_row) {
    return; // no barriers or simdgroup functions below
  }
  const int n0 = word * values_per_word;
  const int group = n0 / group_size; // a word never straddles a group

  float acc[rows][values_per_word];
  MLXK_UNROLL
  for (int m = 0; m < rows; ++m) {
    MLXK_UNROLL
    for (int i = 0; i < values_per_word; ++i) {
      acc[m][i] = 0.0f;
    }
  }

  for (int k = 0; k < K; ++k) {
    const uint wq = w[k * words_per_row + word];
    const float s = float(scales[k * groups_per_row + group]);
    const float b = float(biases[k * groups_per_row + group]);
    float wv[values_per_word];
    MLXK_UNROLL
    for (int i = 0; i < values_per_word; ++i) {
      wv[i] = float((wq >> (i * bits)) & mask) * s + b;
    }
    MLXK_UNROLL
    for (int m = 0; m < rows; ++m) {
      if (m < M) {
        const float xv = float(x[m * K + k]);
        MLXK_UNROLL
        for (int i = 0; i < values_per_word; ++i) {
          acc[m][i] = fma(xv, wv[i], acc[m][i]);
        }
      }
    }
  }

  MLXK_UNROLL
  for (int m = 0; m < rows; ++m) {
    if (m < M) {
      MLXK_UNROLL
      for (int i = 0; i < values_per_word; ++i) {
        y[m * N + n0 + i] = static_cast<T>(acc[m][i]);
      }
    }
  }
}

// ---------------------------------------------------------------------------
template <typename T, int group_size, int bits, bool transpose>
[[kernel]] void mlxk_qmm(
    device const uint32_t* w [[buffer(0)]],
    device const T* scales [[buffer(1)]],
    device const T* biases [[buffer(2)]],
    device const T* x [[buffer(3)]],
    device T* y [[buffer(4)]],
    constant int& M [[buffer(5)]],
    constant int& N [[buffer(6)]],
    constant int& K [[buffer(7)]],
    uint3 tgid [[threadgroup_position_in_grid]],
    uint lid [[thread_index_in_threadgroup]],
    uint simd_gid [[simdgroup_index_in_threadgroup]]) {
  constexpr int BM = 32;
  constexpr int BN = 32;
  constexpr int BK = 32;
  constexpr int LD = 32 + 4; // padded row stride of every tile
  constexpr int threads = 128;
  constexpr int values_per_word = 32 / bits;
  constexpr uint mask = (1u << bits) - 1u;

  threadgroup float x_tile[BM * LD]; // [m][k]
  threadgroup float w_tile[BN * LD]; // transpose: [n][k]; else [k][n]
  threadgroup float y_tile[BM * LD]; // [m][n]

  const int m0 = int(tgid.y) * BM;
  const int n0 = int(tgid.x) * BN;
  const int sm = int(simd_gid) / 2; // this simdgroup's 16 x 16 output block
  const int sn = int(simd_gid) % 2;

  simdgroup_matrix<float, 8, 8> acc[2][2];
  MLXK_UNROLL
  for (int i = 0; i < 2; ++i) {
    MLXK_UNROLL
    for (int j = 0; j < 2; ++j) {
      acc[i][j] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
    }
  }

  for (int k0 = 0; k0 < K; k0 += BK) {
    // Stage x[m0:m0+BM, k0:k0+BK] (zeros past M).
    for (int i = int(lid); i < BM * BK; i += threads) {
      const int r = i / BK;
      const int c = i % BK;
      const int m = m0 + r;
      x_tile[r * LD + c] = m < M ? float(x[m * K + k0 + c]) : 0.0f;
    }
    // Stage the dequantized w tile, one packed word per step.
    if (transpose) {
      constexpr int words_per_tile_row = BK / values_per_word;
      for (int i = int(lid); i < BN * words_per_tile_row; i += threads) {
        const int r = i / words_per_tile_row;
        const int c = (i % words_per_tile_row) * values_per_word;
        const int n = n0 + r;
        const int k = k0 + c;
        uint wq = 0;
        float s = 0.0f;
        float b = 0.0f;
        if (n < N) {
          wq = w[n * (K / values_per_word) + k / values_per_word];
          s = float(scales[n * (K / group_size) + k / group_size]);
          b = float(biases[n * (K / group_size) + k / group_size]);
        }
        MLXK_UNROLL
        for (int e = 0; e < values_per_word; ++e) {
          w_tile[r * LD + c + e] = n < N ? float((wq >> (e * bits)) & mask) * s + b : 0.0f;
        }
      }
    } else {
      constexpr int words_per_tile_row = BN / values_per_word;
      for (int i = int(lid); i < BK * words_per_tile_row; i += threads) {
        const int r = i / words_per_tile_row;
        const int c = (i % words_per_tile_row) * values_per_word;
        const int k = k0 + r;
        const int n = n0 + c; // N is a multiple of 32 here: n < N
        const uint wq = w[k * (N / values_per_word) + n / values_per_word];
        const float s = float(scales[k * (N / group_size) + n / group_size]);
        const float b = float(biases[k * (N / group_size) + n / group_size]);
        MLXK_UNROLL
        for (int e = 0; e < values_per_word; ++e) {
          w_tile[r * LD + c + e] = float((wq >> (e * bits)) & mask) * s + b;
        }
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);

    MLXK_UNROLL
    for (int kk = 0; kk < BK; kk += 8) {
      simdgroup_matrix<float, 8, 8> a[2];
      simdgroup_matrix<float, 8, 8> b[2];
      MLXK_UNROLL
      for (int i = 0; i < 2; ++i) {
        simdgroup_load(a[i], x_tile + (sm * 16 + i * 8) * LD + kk, LD);
      }
      MLXK_UNROLL
      for (int j = 0; j < 2; ++j) {
        if (transpose) {
          simdgroup_load(b[j], w_tile + (sn * 16 + j * 8) * LD + kk, LD, ulong2(0, 0), true);
        } else {
          simdgroup_load(b[j], w_tile + kk * LD + sn * 16 + j * 8, LD);
        }
      }
      MLXK_UNROLL
      for (int i = 0; i < 2; ++i) {
        MLXK_UNROLL
        for (int j = 0; j < 2; ++j) {
          simdgroup_multiply_accumulate(acc[i][j], a[i], b[j], acc[i][j]);
        }
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }

  // Through threadgroup memory to the (bounds-checked) output.
  MLXK_UNROLL
  for (int i = 0; i < 2; ++i) {
    MLXK_UNROLL
    for (int j = 0; j < 2; ++j) {
      simdgroup_store(acc[i][j], y_tile + (sm * 16 + i * 8) * LD + sn * 16 + j * 8, LD);
    }
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (int i = int(lid); i < BM * BN; i += threads) {
    const int r = i / BN;
    const int c = i % BN;
    const int m = m0 + r;
    const int n = n0 + c;
    if (m < M && n < N) {
      y[m * N + n] = static_cast<T>(y_tile[r * LD + c]);
    }
  }
}

// ---------------------------------------------------------------------------
// Instantiations: "mlxk_<kernel>_<dtype>_gs<group size>_b<bits>_<variant>",
// the names csrc/metal/qmm_plan.cpp builds.
#define MLXK_QMV(T, tname, gs, bits, rows) \
  mlxk_instantiate_kernel("mlxk_qmv_" tname "_gs" #gs "_b" #bits "_r" #rows, mlxk_qmv, T, gs, bits, rows)
#define MLXK_QVM(T, tname, gs, bits, rows) \
  mlxk_instantiate_kernel("mlxk_qvm_" tname "_gs" #gs "_b" #bits "_r" #rows, mlxk_qvm, T, gs, bits, rows)
#define MLXK_QMM(T, tname, gs, bits)                                                             \
  mlxk_instantiate_kernel("mlxk_qmm_" tname "_gs" #gs "_b" #bits "_t", mlxk_qmm, T, gs, bits, true) \
  mlxk_instantiate_kernel("mlxk_qmm_" tname "_gs" #gs "_b" #bits "_n", mlxk_qmm, T, gs, bits, false)

#define MLXK_QMM_FAMILY(T, tname, gs, bits) \
  MLXK_QMV(T, tname, gs, bits, 1)           \
  MLXK_QMV(T, tname, gs, bits, 2)           \
  MLXK_QMV(T, tname, gs, bits, 4)           \
  MLXK_QMV(T, tname, gs, bits, 8)           \
  MLXK_QVM(T, tname, gs, bits, 1)           \
  MLXK_QVM(T, tname, gs, bits, 2)           \
  MLXK_QVM(T, tname, gs, bits, 4)           \
  MLXK_QVM(T, tname, gs, bits, 8)           \
  MLXK_QMM(T, tname, gs, bits)

#define MLXK_QMM_ALL_GROUPS(T, tname, unused) \
  MLXK_QMM_FAMILY(T, tname, 32, 4)            \
  MLXK_QMM_FAMILY(T, tname, 64, 4)            \
  MLXK_QMM_FAMILY(T, tname, 128, 4)           \
  MLXK_QMM_FAMILY(T, tname, 32, 8)            \
  MLXK_QMM_FAMILY(T, tname, 64, 8)            \
  MLXK_QMM_FAMILY(T, tname, 128, 8)

MLXK_FOR_EACH_FLOAT(MLXK_QMM_ALL_GROUPS, 0)
