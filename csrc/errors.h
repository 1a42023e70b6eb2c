// Exceptions the ops throw for bad input. The bindings translate them into
// Python's ValueError and TypeError, so every message must name the argument
// and the expectation.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

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

template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

} // namespace mlx_kernels
