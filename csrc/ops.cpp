// Validation and graph construction for the public ops. This file is the one
// place where arguments are checked: backends may assume what it enforces.
#include "ops.h"

#include "mlx/ops.h"

#include "backends.h"
#include "errors.h"
#include "primitives.h"

namespace mlx_kernels {

namespace {

std::string shape_str(const mx::Shape& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    s += (i ? ", " : "");
    s += std::to_string(shape[i]);
  }
  s += (shape.size() == 1 ? ",)" : ")");
  return s;
}

std::string dtype_str(mx::Dtype t) {
  std::ostringstream os;
  os << t;
  return os.str();
}

bool is_supported_float(mx::Dtype t) {
  return t == mx::float32 || t == mx::float16 || t == mx::bfloat16;
}

void check_float(const char* op, const char* name, const mx::array& a) {
  if (!is_supported_float(a.dtype())) {
    throw TypeError(concat(
        op, ": ", name,
        " must be float32, float16 or bfloat16; got ", dtype_str(a.dtype()),
        "."));
  }
}

} // namespace

mx::array quantized_matmul(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const std::optional<mx::array>& biases_opt,
    bool transpose,
    int group_size,
    int bits,
    mx::StreamOrDevice s) {
  constexpr const char* op = "quantized_matmul";

  if (bits != 4 && bits != 8) {
    throw ValueError(concat(
        op, ": bits must be 4 or 8; got ", bits,
        (bits == 2 || bits == 3 || bits == 5 || bits == 6
             ? " (2, 3, 5 and 6 bits are not supported yet)."
             : ".")));
  }
  if (group_size != 32 && group_size != 64 && group_size != 128) {
    throw ValueError(concat(
        op, ": group_size must be 32, 64 or 128; got ", group_size, "."));
  }
  if (!biases_opt) {
    throw ValueError(concat(
        op, ": biases is required (affine quantization: one scale and one "
            "bias per group, as returned by mx.quantize)."));
  }
  const mx::array& biases = *biases_opt;

  // dtypes
  check_float(op, "x", x);
  if (w.dtype() != mx::uint32) {
    throw TypeError(concat(
        op, ": w must be uint32 (the packed output of mx.quantize); got ",
        dtype_str(w.dtype()), "."));
  }
  check_float(op, "scales", scales);
  check_float(op, "biases", biases);
  if (scales.dtype() != biases.dtype()) {
    throw TypeError(concat(
        op, ": scales and biases must have the same dtype; got ",
        dtype_str(scales.dtype()), " and ", dtype_str(biases.dtype()), "."));
  }

  // ranks
  if (x.ndim() < 1) {
    throw ValueError(concat(op, ": x must have at least 1 dimension; got a scalar."));
  }
  if (w.ndim() != 2) {
    throw ValueError(concat(
        op, ": w must be 2-D (batched quantized weights are not supported); "
            "got shape ", shape_str(w.shape()), "."));
  }
  if (scales.ndim() != 2) {
    throw ValueError(concat(
        op, ": scales must be 2-D; got shape ", shape_str(scales.shape()), "."));
  }
  if (scales.shape() != biases.shape()) {
    throw ValueError(concat(
        op, ": scales and biases must have the same shape; got ",
        shape_str(scales.shape()), " and ", shape_str(biases.shape()), "."));
  }

  // shapes: w holds 32/bits values per uint32 along its last axis.
  const int per_word = 32 / bits;
  const int64_t K = x.shape(-1);
  int64_t N;
  if (transpose) {
    // w: [N, K * bits / 32], scales: [N, K / group_size]
    N = w.shape(0);
    if (K % group_size != 0) {
      throw ValueError(concat(
          op, ": K = x.shape[-1] = ", K, " must be a multiple of group_size = ",
          group_size, "."));
    }
    if (int64_t(w.shape(1)) * per_word != K) {
      throw ValueError(concat(
          op, ": with transpose=True, w must have shape (N, K * bits / 32) = (",
          N, ", ", K / per_word, ") for x.shape[-1] = K = ", K, " and bits = ",
          bits, "; got ", shape_str(w.shape()), "."));
    }
    if (scales.shape(0) != N || int64_t(scales.shape(1)) * group_size != K) {
      throw ValueError(concat(
          op, ": with transpose=True, scales must have shape (N, K / group_size) = (",
          N, ", ", K / group_size, "); got ", shape_str(scales.shape()),
          " (is group_size right?)."));
    }
  } else {
    // w: [K, N * bits / 32], scales: [K, N / group_size]
    N = int64_t(w.shape(1)) * per_word;
    if (w.shape(0) != K) {
      throw ValueError(concat(
          op, ": with transpose=False, w must have shape (K, N * bits / 32) with "
              "K = x.shape[-1] = ", K, "; got ", shape_str(w.shape()), "."));
    }
    if (N % group_size != 0 || scales.shape(0) != K ||
        int64_t(scales.shape(1)) * group_size != N) {
      throw ValueError(concat(
          op, ": with transpose=False, scales must have shape (K, N / group_size) = (",
          K, ", ", N / group_size, ") for w of shape ", shape_str(w.shape()),
          " and bits = ", bits, "; got ", shape_str(scales.shape()),
          " (is group_size right?)."));
    }
  }

  auto stream = mx::to_stream(s);
  require_backend(op, stream);

  // dtype rule of mx.quantized_matmul: the result type of x and scales.
  auto out_dtype = mx::promote_types(x.dtype(), scales.dtype());
  auto out_shape = x.shape();
  out_shape.back() = static_cast<int>(N);

  std::vector<mx::array> inputs = {
      mx::astype(x, out_dtype, stream),
      w,
      mx::astype(scales, out_dtype, stream),
      mx::astype(biases, out_dtype, stream)};
  return mx::array(
      std::move(out_shape),
      out_dtype,
      std::make_shared<QuantizedMatmul>(stream, group_size, bits, transpose),
      std::move(inputs));
}

} // namespace mlx_kernels
