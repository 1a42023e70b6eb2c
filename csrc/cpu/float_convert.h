// Scalar conversions between MLX's storage types and float32 for the CPU
// kernels. float16 uses the F16C instructions where the build targets them.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

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

// n consecutive values to float32 (vectorized where the build allows).
template <typename T>
inline void to_float_n(const T* src, float* dst, int64_t n) {
  int64_t i = 0;
  if constexpr (std::is_same_v<T, mx::float16_t>) {
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
      _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(src + i))));
    }
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8) {
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(
          reinterpret_cast<const __m128i*>(src + i))));
    }
#endif
  }
  for (; i < n; ++i) {
    dst[i] = to_float(src[i]);
  }
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
