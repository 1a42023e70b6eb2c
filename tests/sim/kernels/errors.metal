#include "common.h"

[[kernel]] void oob_read(
    device const float* in [[buffer(0)]],
    device float* out [[buffer(1)]],
    constant int& offset [[buffer(2)]],
    uint gid [[thread_position_in_grid]]) {
  out[gid] = in[int(gid) + offset];
}

[[kernel]] void oob_write(
    device float* out [[buffer(0)]],
    constant int& offset [[buffer(1)]],
    uint gid [[thread_position_in_grid]]) {
  out[int(gid) + offset] = 1.0f;
}

// only half of the threads reach the barrier; the others return
[[kernel]] void divergent_barrier(
    device float* out [[buffer(0)]],
    uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float t[64];
  if (lid < 16) {
    t[lid] = 1.0f;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    out[lid] = t[(lid + 1) % 16];
  }
}

// all threads reach a barrier, but not the same one
[[kernel]] void different_barriers(
    device float* out [[buffer(0)]],
    uint lid [[thread_index_in_threadgroup]]) {
  if (lid % 2 == 0) {
    threadgroup_barrier(mem_flags::mem_threadgroup);
    out[lid] = 1.0f;
  } else {
    threadgroup_barrier(mem_flags::mem_device);
    out[lid] = 2.0f;
  }
}

// a simd reduction executed by half of the simdgroup
[[kernel]] void divergent_simd(
    device float* out [[buffer(0)]],
    uint lane [[thread_index_in_simdgroup]]) {
  float v = 1.0f;
  if (lane < 16) v = simd_sum(v);
  out[lane] = v;
}

// threads >= 32 read an element nobody wrote
[[kernel]] void uninit_tg_read(
    device float* out [[buffer(0)]],
    uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float t[64];
  if (lid < 32) t[lid] = float(lid);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[lid] = t[63 - lid];
}

// reads past the end of a threadgroup array
[[kernel]] void tg_oob(
    device float* out [[buffer(0)]],
    uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float t[32];
  t[lid] = 1.0f;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[lid] = t[lid + 1];
}

// more threadgroup memory than Metal allows (32 KiB)
[[kernel]] void tg_too_big(
    device float* out [[buffer(0)]],
    uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float big[8192];
  threadgroup float more[64];
  big[lid] = 1.0f;
  more[lid] = 2.0f;
  out[lid] = big[lid] + more[lid];
}

// a helper that writes through a threadgroup pointer: used from a loop with a stride bug
METAL_FUNC void fill(threadgroup float* dst, uint i, float v) { dst[i] = v; }
[[kernel]] void stride_bug(
    device const float* in [[buffer(0)]],
    device float* out [[buffer(1)]],
    uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float t[128];
  fill(t, lid * 2, in[lid]);  // writes only even slots (bug: should be lid)
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[lid] = t[lid];
}

// integer division by a value that is zero for some threads
[[kernel]] void int_div(
    device const int* a [[buffer(0)]],
    device const int* b [[buffer(1)]],
    device int* out [[buffer(2)]],
    uint i [[thread_position_in_grid]]) {
  out[i] = a[i] / b[i];
}

// a SIMD-group function is not a threadgroup barrier: reading another simdgroup's data
// after it is a race
[[kernel]] void simd_not_a_barrier(
    device float* out [[buffer(0)]],
    uint lid [[thread_index_in_threadgroup]],
    uint n [[threads_per_threadgroup]]) {
  threadgroup float t[64];
  t[lid] = float(lid);
  float s = simd_sum(1.0f);
  out[lid] = t[(lid + 32) % n] + s;
}

// exchange inside one simdgroup through threadgroup memory: not reported
[[kernel]] void intra_simd_exchange(
    device float* out [[buffer(0)]],
    uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float t[64];
  t[lid] = float(lid);
  simdgroup_barrier(mem_flags::mem_threadgroup);
  out[lid] = t[lid ^ 1];
}

// an execution-only barrier does not order threadgroup memory
[[kernel]] void unfenced_barrier(
    device float* out [[buffer(0)]],
    uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float t[64];
  t[lid] = float(lid);
  threadgroup_barrier(mem_flags::mem_device);
  out[lid] = t[63 - lid];
}
