// Environment knobs of the CUDA launch plans (qmm_plan.cpp, attn_plan.cpp),
// for A/B measurements on one build: each is read once, into a namespace-scope
// constant of its plan file, and every default is the plan's own rule.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>

namespace mlx_kernels::cuda {

// A positive count: the variable's value, or `fallback` when it is unset,
// not a number or not positive.
inline int64_t tuning(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  const int64_t n = v ? std::atoll(v) : 0;
  return n > 0 ? n : fallback;
}

// A knob whose 0 means something: its value clamped to [lo, hi], or
// `fallback` when the variable is unset.
inline int64_t knob_in(const char* name, int64_t lo, int64_t hi, int64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::clamp<int64_t>(std::atoll(v), lo, hi) : fallback;
}

// A kernel switch: on unless the variable is set to 0.
inline bool switched_on(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr || std::atoll(v) != 0;
}

} // namespace mlx_kernels::cuda
