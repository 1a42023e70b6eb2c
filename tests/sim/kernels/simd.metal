#include "common.h"

#define K 16
[[kernel]] void simd_ops(
    device const float* x [[buffer(0)]],
    device float* out [[buffer(1)]],
    uint gid [[thread_position_in_grid]],
    uint lane [[thread_index_in_simdgroup]],
    uint sg_size [[threads_per_simdgroup]]) {
  float v = x[gid];
  device float* o = out + gid * K;
  o[0] = simd_shuffle(v, (lane + 5) % sg_size);
  o[1] = simd_shuffle_down(v, 3);
  o[2] = simd_shuffle_up(v, 2);
  o[3] = simd_shuffle_xor(v, 7);
  o[4] = simd_broadcast(v, 9 % sg_size);
  o[5] = simd_max(v);
  o[6] = simd_min(v);
  o[7] = simd_prefix_exclusive_sum(v);
  o[8] = float(simd_sum(int(v)));
  o[9] = simd_prefix_inclusive_sum(v);
  o[10] = float(sg_size);
  o[11] = simd_any(v > 30.0f) ? 1.0f : 0.0f;
  o[12] = simd_shuffle_and_fill_down(v, -v, 4);
  o[13] = simd_shuffle_and_fill_up(v, -v, 4);
  o[14] = simd_shuffle_rotate_down(v, 5);
  o[15] = float(ulong(simd_ballot(v > 0.0f)) & 0xffffffff) - float(1u << 31) * 0.0f;
}

// simd_sum of a vector type and of half
[[kernel]] void simd_vec(
    device const float4* x [[buffer(0)]],
    device float4* out [[buffer(1)]],
    device half* hout [[buffer(2)]],
    uint gid [[thread_position_in_grid]],
    uint lane [[thread_index_in_simdgroup]]) {
  float4 v = simd_sum(x[gid]);
  half h = simd_sum(half(x[gid].x));
  if (lane == 0) {
    out[gid / 32] = v;
    hout[gid / 32] = h;
  }
}
