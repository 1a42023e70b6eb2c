#include "common.h"

// reverse within each threadgroup through threadgroup memory
[[kernel]] void reverse_tg(
    device const float* in [[buffer(0)]],
    device float* out [[buffer(1)]],
    uint gid [[thread_position_in_grid]],
    uint lid [[thread_position_in_threadgroup]],
    uint n [[threads_per_threadgroup]]) {
  threadgroup float tile[1024];
  tile[lid] = in[gid];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[gid] = tile[n - 1 - lid];
}

// same, barrier forgotten
[[kernel]] void reverse_tg_nobarrier(
    device const float* in [[buffer(0)]],
    device float* out [[buffer(1)]],
    uint gid [[thread_position_in_grid]],
    uint lid [[thread_position_in_threadgroup]],
    uint n [[threads_per_threadgroup]]) {
  threadgroup float tile[1024];
  tile[lid] = in[gid];
  out[gid] = tile[n - 1 - lid];
}

// out[i] = in[i + 1] within the threadgroup (0 for the last), in two phases through the
// same tile; the barrier between reading the neighbour and overwriting it is missing.
// In lock-step program order this happens to work; in any other order it does not.
[[kernel]] void shift_missing_barrier(
    device const float* in [[buffer(0)]],
    device float* out [[buffer(1)]],
    uint gid [[thread_position_in_grid]],
    uint lid [[thread_position_in_threadgroup]],
    uint n [[threads_per_threadgroup]]) {
  threadgroup float tile[256];
  tile[lid] = in[gid];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  float x = (lid + 1 < n) ? tile[lid + 1] : 0.0f;
  // missing: threadgroup_barrier(mem_flags::mem_threadgroup);
  tile[lid] = x;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[gid] = tile[lid];
}

[[kernel]] void shift_with_barrier(
    device const float* in [[buffer(0)]],
    device float* out [[buffer(1)]],
    uint gid [[thread_position_in_grid]],
    uint lid [[thread_position_in_threadgroup]],
    uint n [[threads_per_threadgroup]]) {
  threadgroup float tile[256];
  tile[lid] = in[gid];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  float x = (lid + 1 < n) ? tile[lid + 1] : 0.0f;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  tile[lid] = x;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[gid] = tile[lid];
}

// [[threadgroup(i)]] memory whose length the host sets; 2-D threadgroups
[[kernel]] void transpose_tile(
    device const float* in [[buffer(0)]],
    device float* out [[buffer(1)]],
    threadgroup float* tile [[threadgroup(0)]],
    uint2 lid [[thread_position_in_threadgroup]],
    uint2 tg [[threadgroup_position_in_grid]],
    uint2 ntg [[threadgroups_per_grid]],
    uint2 tpt [[threads_per_threadgroup]]) {
  uint W = ntg.x * tpt.x;
  uint H = ntg.y * tpt.y;
  uint x = tg.x * tpt.x + lid.x, y = tg.y * tpt.y + lid.y;
  tile[lid.y * (tpt.x + 1) + lid.x] = in[y * W + x];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  uint ox = tg.y * tpt.y + lid.x, oy = tg.x * tpt.x + lid.y;
  out[oy * H + ox] = tile[lid.x * (tpt.x + 1) + lid.y];
}

// threadgroup atomics and device atomics
[[kernel]] void histogram(
    device const uint* x [[buffer(0)]],
    device atomic_uint* hist [[buffer(1)]],
    uint gid [[thread_position_in_grid]],
    uint lid [[thread_index_in_threadgroup]]) {
  threadgroup atomic_uint local_hist[16];
  if (lid < 16) atomic_store_explicit(&local_hist[lid], 0u, memory_order_relaxed);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  atomic_fetch_add_explicit(&local_hist[x[gid] % 16], 1u, memory_order_relaxed);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (lid < 16) {
    uint c = atomic_load_explicit(&local_hist[lid], memory_order_relaxed);
    atomic_fetch_add_explicit(&hist[lid], c, memory_order_relaxed);
  }
}

// four barriers: rotate the tile twice through threadgroup memory
[[kernel]] void four_barriers(
    device const float* in [[buffer(0)]],
    device float* out [[buffer(1)]],
    uint gid [[thread_position_in_grid]],
    uint lid [[thread_position_in_threadgroup]],
    uint n [[threads_per_threadgroup]]) {
  threadgroup float a[1024];
  threadgroup float b[1024];
  a[lid] = in[gid];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  b[lid] = a[(lid + 1) % n] * 2.0f;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  a[lid] = b[(lid + 1) % n] + 1.0f;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  b[lid] = a[(lid + n - 2) % n];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[gid] = b[lid];
}

// suspension cost: `iters` barriers per thread
[[kernel]] void barrier_loop(
    device float* out [[buffer(0)]],
    constant int& iters [[buffer(1)]],
    uint gid [[thread_position_in_grid]]) {
  float acc = 0;
  for (int i = 0; i < iters; i++) {
    threadgroup_barrier(mem_flags::mem_none);
    acc += 1.0f;
  }
  out[gid] = acc;
}

// in-place update through two bindings that may alias
[[kernel]] void add_two_views(
    device float* a [[buffer(0)]],
    device float* b [[buffer(1)]],
    uint gid [[thread_position_in_grid]]) {
  a[gid] += 1.0f;
  b[gid] += 10.0f;
}
