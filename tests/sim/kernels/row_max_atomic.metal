// MLX-style constructs: Limits<> with static constant members, an atomic CAS max loop on
// a wrapper type, reinterpret_cast of device pointers, shuffle-down reduction loops.
#include <metal_stdlib>
#include <metal_simdgroup>
#pragma METAL internals : enable
using namespace metal;

#define STEEL_PRAGMA_UNROLL _Pragma("clang loop unroll(full)")
#define MLX_MTL_CONST static constant constexpr const

template <typename U> struct Limits {
  static const constant U max = metal::numeric_limits<U>::max();
  static const constant U min = metal::numeric_limits<U>::min();
  static const constant U finite_max = metal::numeric_limits<U>::max();
};
template <> struct Limits<float> {
  static constexpr constant float max = metal::numeric_limits<float>::infinity();
  static constexpr constant float min = -metal::numeric_limits<float>::infinity();
};

template <typename T> struct mlx_atomic { atomic<uint> val; };

template <typename T>

inline void atomic_max_u(device mlx_atomic<T>* object, T val, size_t offset = 0) {
  uint expected = atomic_load_explicit(&(object[offset].val), memory_order_relaxed);
  while (as_type<T>(expected) < val &&
         !atomic_compare_exchange_weak_explicit(&(object[offset].val), &expected, as_type<uint>(val),
                                                memory_order_relaxed, memory_order_relaxed)) {
  }
}

struct MaxOp {
  template <typename T> T operator()(T a, T b) const { return metal::max(a, b); }
  MLX_MTL_CONST float init = Limits<float>::min;
};

// a project-defined helper named like a libm function that Metal does not provide
float erf(float a) { return a * 0.5f; }

template <typename T, typename Op, int N_READS = 4>
[[kernel]] void row_reduce(
    const device T* in [[buffer(0)]],
    device mlx_atomic<float>* out [[buffer(1)]],
    const constant size_t& reduction_size [[buffer(2)]],
    uint2 gid [[thread_position_in_grid]],
    uint lsize [[threads_per_threadgroup]],
    uint simd_lane_id [[thread_index_in_simdgroup]],
    uint simd_per_group [[simdgroups_per_threadgroup]],
    uint simd_group_id [[simdgroup_index_in_threadgroup]]) {
  Op op;
  float total = Op::init;
  const device char* base = reinterpret_cast<const device char*>(in);
  const device T* row = reinterpret_cast<const device T*>(base + gid.y * reduction_size * sizeof(T));
  for (uint i = gid.x * N_READS; i < reduction_size; i += lsize * N_READS) {
    STEEL_PRAGMA_UNROLL
    for (int j = 0; j < N_READS; j++) {
      if (i + j < reduction_size) total = op(total, float(row[i + j]));
    }
  }
  for (ushort off = 16; off > 0; off /= 2) total = op(total, simd_shuffle_down(total, off));
  threadgroup float partial[32];
  if (simd_lane_id == 0) partial[simd_group_id] = total;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (simd_group_id == 0) {
    total = simd_lane_id < simd_per_group ? partial[simd_lane_id] : Op::init;
    total = simd_max(total);
    if (simd_lane_id == 0) atomic_max_u<float>(out, erf(total) * 2.0f, gid.y);
  }
}
template [[host_name("row_max_float")]] [[kernel]] decltype(row_reduce<float, MaxOp>) row_reduce<float, MaxOp>;
template [[host_name("row_max_half")]] [[kernel]] decltype(row_reduce<half, MaxOp, 8>) row_reduce<half, MaxOp, 8>;
