// Stand-in for <fmt/format.h>: MLX's CUDA headers (lru_cache.h) include it for
// an error message in a template this extension never instantiates, and the
// MLX wheels ship no fmt headers. Used only when no real fmt is found.
#pragma once

#include <string>

namespace fmt {
template <typename... Args>
std::string format(const char* pattern, Args&&...) {
  return std::string(pattern);
}
} // namespace fmt
