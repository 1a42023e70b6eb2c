// shared helpers for the simulator test kernels (MLX style)
#pragma once
#include <metal_stdlib>
using namespace metal;

#define METAL_FUNC inline __attribute__((always_inline))
#define instantiate_kernel(name, func, ...) \
  template [[host_name(name)]] [[kernel]] decltype(func<__VA_ARGS__>) func<__VA_ARGS__>;
