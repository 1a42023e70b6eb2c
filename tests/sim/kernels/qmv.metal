#include "common.h"

// 4-bit affine-quantized matrix-vector product in the production kernel style:
// y[n] = sum_k (scale[n, g] * q[n, k] + bias[n, g]) * x[k], g = k / group_size.
// Each simdgroup computes `rows` outputs; partial results go through threadgroup memory.

template <typename T, int values_per_thread>
METAL_FUNC float load_vector(const device T* x, thread float* x_thread) {
  float sum = 0;
  for (int i = 0; i < values_per_thread; i++) {
    x_thread[i] = float(x[i]);
    sum += x_thread[i];
  }
  return sum;
}

template <typename U, int values_per_thread, int bits>
METAL_FUNC float qdot(const device uint8_t* w, const thread float* x_thread, U scale, U bias, float sum) {
  static_assert(bits == 4, "only 4 bits here");
  float accum = 0;
  for (int i = 0; i < values_per_thread / 2; i++) {
    uint8_t b = w[i];
    accum += x_thread[2 * i] * float(b & 0x0f) + x_thread[2 * i + 1] * float((b >> 4) & 0x0f);
  }
  return float(scale) * accum + float(bias) * sum;
}

template <typename T>
METAL_FUNC void store_partial(threadgroup T* dst, uint i, T v) {
  dst[i] = v;
}

template <typename T, int group_size, int bits, int rows>
[[kernel]] void qmv_fast(
    device const uint32_t* w [[buffer(0)]],
    device const T* scales [[buffer(1)]],
    device const T* biases [[buffer(2)]],
    device const T* x [[buffer(3)]],
    device T* y [[buffer(4)]],
    constant int& K [[buffer(5)]],
    constant int& N [[buffer(6)]],
    constant const int* strides [[buffer(7)]],
    threadgroup float* scratch [[threadgroup(0)]],
    uint3 tid [[threadgroup_position_in_grid]],
    uint3 lid [[thread_position_in_threadgroup]],
    uint simd_gid [[simdgroup_index_in_threadgroup]],
    uint simd_lid [[thread_index_in_simdgroup]]) {
  constexpr int values_per_thread = 8;
  constexpr int packs_per_thread = values_per_thread * bits / 32;
  constexpr int block = 32 * values_per_thread;
  threadgroup T tile[2 * rows];
  float x_thread[values_per_thread];
  float result[rows] = {0};

  const int row0 = (tid.x * 2 + simd_gid) * rows;
  const int in_vec = K * bits / 32;  // uint32 words per row
  x += tid.y * strides[0];
  y += tid.y * strides[1];

  for (int k = simd_lid * values_per_thread; k < K; k += block) {
    float sum = load_vector<T, values_per_thread>(x + k, x_thread);
    for (int r = 0; r < rows; r++) {
      int row = row0 + r;
      if (row >= N) break;
      const device uint8_t* wl = (const device uint8_t*)(w + row * in_vec + k * bits / 32);
      T s = scales[row * (K / group_size) + k / group_size];
      T b = biases[row * (K / group_size) + k / group_size];
      result[r] += qdot<T, values_per_thread, bits>(wl, x_thread, s, b, sum);
    }
  }
  (void)packs_per_thread;
  for (int r = 0; r < rows; r++) {
    result[r] = simd_sum(result[r]);
    if (simd_lid == 0) {
      scratch[simd_gid * rows + r] = result[r];
      store_partial(tile, simd_gid * rows + r, static_cast<T>(result[r]));
    }
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  uint i = lid.x;
  if (i < 2 * rows && tid.x * 2 * rows + i < uint(N)) {
    y[tid.x * 2 * rows + i] = T(0.5f * scratch[i]) + T(0.5f * float(tile[i]));
  }
}

#define instantiate_qmv(tname, type, gs, b, rows) \
  instantiate_kernel("qmv_fast_" #tname "_gs_" #gs "_b_" #b, qmv_fast, type, gs, b, rows)
instantiate_qmv(float32, float, 64, 4, 4)
instantiate_qmv(float16, half, 64, 4, 4)
instantiate_qmv(bfloat16, bfloat, 32, 4, 2)
