// Exceptions the ops throw for bad input. The bindings translate them into
// Python's ValueError and TypeError, so every message must name the argument
// and the expectation.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace mlx_kernels {

// -> Python TypeError: an argument has the wrong dtype or kind.
struct TypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// -> Python ValueError: an argument has the wrong shape or value.
struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// -> Python NotImplementedError: a valid request this build cannot serve.
struct NotImplemented : std::logic_error {
  using std::logic_error::logic_error;
};

namespace detail {
// Numbers go through std::to_string (vsnprintf), not an ostream: on the H200,
// once MLX's CUDA backend had run in a process, `std::ostringstream << int`
// crashed (segfault) inside the message of every ValueError that carried a
// number, while messages made of strings alone did not (qmm_h200_notes.md).
inline void append(std::string& s, const std::string& v) {
  s += v;
}
inline void append(std::string& s, const char* v) {
  s += v;
}
inline void append(std::string& s, char v) {
  s += v;
}
template <typename T>
void append(std::string& s, const T& v) {
  if constexpr (std::is_arithmetic_v<T>) {
    s += std::to_string(v);
  } else {
    std::ostringstream os; // other types (e.g. mx::Dtype): their operator<<
    os << v;
    s += os.str();
  }
}
} // namespace detail

template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::string s;
  (detail::append(s, parts), ...);
  return s;
}

} // namespace mlx_kernels
