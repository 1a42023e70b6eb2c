// Shared helpers for the mlx_kernels Metal shaders.
#pragma once

#include <metal_stdlib>

using namespace metal;

// One pipeline per instantiation, named by `name` (the host's launch plan
// builds the same name).
#define mlxk_instantiate_kernel(name, func, ...) \
  template [[host_name(name)]] [[kernel]] decltype(func<__VA_ARGS__>) func<__VA_ARGS__>;

// The host name of a dtype, as the launch plans spell it.
#define MLXK_FOR_EACH_FLOAT(M, ...) \
  M(float, "float32", __VA_ARGS__)  \
  M(half, "float16", __VA_ARGS__)   \
  M(bfloat, "bfloat16", __VA_ARGS__)

// Fully unroll the next loop (its trip count is a compile-time constant).
#define MLXK_UNROLL _Pragma("clang loop unroll(full)")
