#include "common.h"

// D = A * B + C for 8x8 matrices, one simdgroup
template <typename T>
[[kernel]] void mma8(
    device const T* A [[buffer(0)]],
    device const T* B [[buffer(1)]],
    device const float* C [[buffer(2)]],
    device float* D [[buffer(3)]]) {
  simdgroup_matrix<T, 8, 8> a;
  simdgroup_matrix<T, 8, 8> b;
  simdgroup_matrix<float, 8, 8> c;
  simdgroup_load(a, A, 8);
  simdgroup_load(b, B, 8);
  simdgroup_load(c, C, 8);
  simdgroup_matrix<float, 8, 8> d;
  simdgroup_multiply_accumulate(d, a, b, c);
  simdgroup_store(d, D, 8);
}
instantiate_kernel("mma8_float", mma8, float)
instantiate_kernel("mma8_half", mma8, half)
instantiate_kernel("mma8_bfloat", mma8, bfloat)

// 16x16 GEMM C = A * B^T with 4 simdgroups, tiles staged in threadgroup memory,
// transposed loads and origins
[[kernel]] void gemm16_nt(
    device const half* A [[buffer(0)]],
    device const half* B [[buffer(1)]],
    device half* C [[buffer(2)]],
    uint lid [[thread_index_in_threadgroup]],
    uint sg [[simdgroup_index_in_threadgroup]]) {
  threadgroup half As[16 * 16];
  threadgroup half Bs[16 * 16];
  for (uint i = lid; i < 256; i += 128) {
    As[i] = A[i];
    Bs[i] = B[i];
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  uint bi = sg / 2, bj = sg % 2;
  simdgroup_matrix<float, 8, 8> acc = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  for (uint k = 0; k < 16; k += 8) {
    simdgroup_matrix<half, 8, 8> a, b;
    simdgroup_load(a, As, 16, ulong2(k, bi * 8));
    simdgroup_load(b, Bs, 16, ulong2(k, bj * 8), true);
    simdgroup_multiply_accumulate(acc, a, b, acc);
  }
  simdgroup_matrix<half, 8, 8> out;
  out.thread_elements() = half2(acc.thread_elements());
  simdgroup_store(out, C, 16, ulong2(bj * 8, bi * 8));
}
