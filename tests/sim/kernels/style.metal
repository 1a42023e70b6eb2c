// Language features production kernels use; each kernel writes values checked by the tests.
#include "common.h"

#define STEEL_CONST static constant constexpr const

constant float kTable[4] = {0.5f, 1.5f, 2.5f, 3.5f};
constant constexpr int kOffset = 3;

struct Tile {
  STEEL_CONST int kRows = 2;
  STEEL_CONST int kCols = 4;
  float v[kRows * kCols];

  METAL_FUNC void load(const device float* src) {
#pragma unroll
    for (int i = 0; i < kRows * kCols; i++) {
      v[i] = src[i];
    }
  }
  template <typename P>
  METAL_FUNC void store(P dst) const {
    _Pragma("unroll") for (int i = 0; i < kRows * kCols; i++) {
      dst[i] = v[i] * 2.0f;
    }
  }
  METAL_FUNC float sum() const {
    float s = 0;
#pragma clang loop unroll(full)
    for (int i = 0; i < kRows * kCols; i++) s += v[i];
    return s;
  }
};

// templates over pointer types (device, threadgroup, thread)
template <typename P, typename T>
METAL_FUNC void copy_n(P dst, const T* src, int n) {
  for (int i = 0; i < n; i++) dst[i] = src[i];
}

static inline float scaled(thread const float& x, constant const float* s) { return x * s[0]; }
static inline float scaled2(thread const float& x, const constant float* s) { return x * s[1]; }

template <typename T, int N>
struct Acc {
  T vals[N];
  METAL_FUNC Acc() {
    for (int i = 0; i < N; i++) vals[i] = T(0);
  }
  METAL_FUNC void add(thread const T* x) {
    for (int i = 0; i < N; i++) vals[i] += x[i];
  }
};

kernel void old_style_kernel(
    device float* out [[buffer(0)]],
    const constant float* scale [[buffer(1)]],
    constant const int* idx [[buffer(2)]],
    device const int64_t* big [[buffer(3)]],
    ushort lane [[thread_index_in_simdgroup]],
    ushort2 lid2 [[thread_position_in_threadgroup]],
    const uint3 gsize [[threads_per_grid]],
    const uint tid [[thread_index_in_threadgroup]]) [[max_total_threads_per_threadgroup(64)]] {
  threadgroup float stage[2][32 + 1];
  threadgroup Tile shared_tile;
  Tile t;
  float inputs[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  if (tid == 0) {
    device float* o = out;
    thread float* tp = inputs;
    t.load(out + 16);  // reads values the host put there
    t.store(o);        // device pointer
    t.store(tp);       // thread pointer
    t.store(&stage[1][0]);
    shared_tile = t;
    copy_n(o + 8, tp, 8);
  }
  threadgroup_barrier(mem_flags::mem_threadgroup | mem_flags::mem_device);
  if (tid == 1) {
    Acc<float, 4> acc;
    acc.add(inputs);
    float x = 3.0f;
    out[24] = acc.vals[3] + scaled(x, scale) + scaled2(x, scale);
    out[25] = kTable[idx[0]] + float(kOffset) + float(Tile::kCols);
    out[26] = shared_tile.sum() + stage[1][7];
    out[27] = float(big[0] >> 32);
    out[28] = float(gsize.x) + float(lane) + float(lid2.x);
    uint64_t m = uint64_t(big[1]) * 3u;
    out[29] = float(m & 0xffff);
  }
}

// nested instantiation macros
template <typename T, int BM, int BN>
[[kernel]] void fill_tile(
    device T* out [[buffer(0)]],
    uint2 lid [[thread_position_in_threadgroup]],
    uint2 tg [[threadgroup_position_in_grid]]) {
  threadgroup T tile[BM][BN + 1];
  tile[lid.y][lid.x] = T(lid.y * 100 + lid.x);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[(tg.y * BM + lid.y) * BN + lid.x] = tile[BM - 1 - lid.y][lid.x] + T(tg.y);
}
#define instantiate_fill_inner(tname, type, bm, bn) \
  instantiate_kernel("fill_tile_" #tname "_" #bm "x" #bn, fill_tile, type, bm, bn)
#define instantiate_fill(tname, type)         \
  instantiate_fill_inner(tname, type, 4, 8)   \
  instantiate_fill_inner(tname, type, 8, 16)
instantiate_fill(float32, float)
instantiate_fill(int32, int)
instantiate_fill(float16, half)

// kernels inside namespaces
namespace mlxk {
namespace detail {
template <typename T>
[[kernel]] void ns_scale(
    device T* x [[buffer(0)]],
    constant float& s [[buffer(1)]],
    uint i [[thread_position_in_grid]]) {
  x[i] = T(float(x[i]) * s);
}
instantiate_kernel("ns_scale_float", ns_scale, float)

[[kernel]] void ns_plain(device float* x [[buffer(0)]], uint i [[thread_position_in_grid]]) {
  x[i] += 1.0f;
}
}  // namespace detail
}  // namespace mlxk

// older instantiation style, qualified, at global scope
template [[host_name("ns_scale_half")]] [[kernel]] void mlxk::detail::ns_scale<half>(
    device half* x [[buffer(0)]],
    constant float& s [[buffer(1)]],
    uint i [[thread_position_in_grid]]);

// private pointers/references to threadgroup memory declared in the kernel body, alignas
[[kernel]] void tg_pointers(
    device const float* in [[buffer(0)]],
    device float* out [[buffer(1)]],
    uint lid [[thread_index_in_threadgroup]]) {
  alignas(64) threadgroup float buf[2][64];
  threadgroup float* row = buf[1];
  threadgroup float *p0 = &buf[0][0], *p1 = row;
  threadgroup float(&whole)[2][64] = buf;
  row[lid] = in[lid];
  p0[lid] = 2.0f * in[lid];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[lid] = p1[63 - lid] + whole[0][lid] + ((ulong)(&buf[0][0]) % 64 == 0 ? 1000.0f : 0.0f);
}

// a non-template kernel whose parameter types are only visible inside its namespace, and a
// kernel in an anonymous namespace
namespace mlxk {
struct ScaleParams {
  float mul;
  float add;
};
[[kernel]] void ns_affine(
    device float* x [[buffer(0)]],
    constant ScaleParams& p [[buffer(1)]],
    uint i [[thread_position_in_grid]]) {
  x[i] = x[i] * p.mul + p.add;
}
namespace {
[[kernel]] void anon_inc(device float* x [[buffer(0)]], uint i [[thread_position_in_grid]]) {
  x[i] += 2.0f;
}
}  // namespace
}  // namespace mlxk
