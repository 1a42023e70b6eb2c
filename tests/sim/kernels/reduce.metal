#include "common.h"

// one simdgroup per row: out[row] = dot(a[row, :], b)
template <typename T>
[[kernel]] void row_dot(
    device const T* a [[buffer(0)]],
    device const T* b [[buffer(1)]],
    device float* out [[buffer(2)]],
    constant int& K [[buffer(3)]],
    uint3 tid [[threadgroup_position_in_grid]],
    uint simd_lid [[thread_index_in_simdgroup]]) {
  float acc = 0;
  for (int k = simd_lid; k < K; k += 32) {
    acc += float(a[tid.x * K + k]) * float(b[k]);
  }
  acc = simd_sum(acc);
  if (simd_lid == 0) {
    out[tid.x] = acc;
  }
}

#define instantiate_row_dot(tname, type) \
  instantiate_kernel("row_dot_" #tname, row_dot, type)
instantiate_row_dot(float32, float)
instantiate_row_dot(float16, half)
instantiate_row_dot(bfloat16, bfloat)

// threadgroup reduction: simd_sum per simdgroup, partials through threadgroup memory
[[kernel]] void block_sum(
    device const float* x [[buffer(0)]],
    device float* out [[buffer(1)]],
    constant uint& n [[buffer(2)]],
    uint gid [[thread_position_in_grid]],
    uint tg [[threadgroup_position_in_grid]],
    uint lid [[thread_index_in_threadgroup]],
    uint simd_gid [[simdgroup_index_in_threadgroup]],
    uint simd_lid [[thread_index_in_simdgroup]],
    uint nsg [[simdgroups_per_threadgroup]]) {
  threadgroup float partial[32];
  float v = gid < n ? x[gid] : 0.0f;
  v = simd_sum(v);
  if (simd_lid == 0) partial[simd_gid] = v;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (simd_gid == 0) {
    float p = simd_lid < nsg ? partial[simd_lid] : 0.0f;
    p = simd_sum(p);
    if (simd_lid == 0) out[tg] = p;
  }
}
