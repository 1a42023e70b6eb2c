// Scalar conversions between MLX's storage types and float32 for the CPU
// kernels. float16 uses the F16C instructions where the build targets them.
#pragma once

#include <cstdint>
#include <cstring>

#include "mlx/types/half_types.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace mlx_kernels::cpu {

namespace mx = mlx::core;

inline float to_float(float v) {
  return v;
}

inline float to_float(mx::float16_t v) {
#if defined(__F16C__)
  uint16_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return _cvtsh_ss(bits);
#else
  return static_cast<float>(v);
#endif
}

inline float to_float(mx::bfloat16_t v) {
  uint16_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  uint32_t wide = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &wide, sizeof(f));
  return f;
}

// Round to nearest even, as MLX's own conversions do.
template <typename T>
inline T from_float(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
#if defined(__F16C__)
  } else if constexpr (std::is_same_v<T, mx::float16_t>) {
    uint16_t bits = _cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT);
    T out;
    std::memcpy(&out, &bits, sizeof(bits));
    return out;
#endif
  } else {
    return T(v);
  }
}

} // namespace mlx_kernels::cpu
