// Validation and graph construction for the public ops. This file is the one
// place where arguments are checked: backends may assume what it enforces.
#include "ops.h"

#include "mlx/ops.h"

#include "backends.h"
#include "cpu_backend.h"
#include "metal/sim_encoder.h"
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

// The CPU backend an op called now on `stream` will use; refuses the Metal
// simulator when this build has none.
CpuBackend cpu_backend_for(const char* op, const mx::Stream& stream) {
  if (stream.device.type != mx::Device::cpu) {
    return CpuBackend{};
  }
  CpuBackend backend = current_cpu_backend();
  std::string why;
  if (backend.metal_simulator && !metal::simulator_available(&why)) {
    throw NotImplemented(concat("mlx_kernels.", op, ": ", why));
  }
  return backend;
}

// GPU kernels read inputs as row-contiguous buffers: on GPU streams, gather
// non-contiguous ones with MLX's contiguous op (free when already contiguous).
// CPU backends gather at evaluation instead (cpu/contiguous.h).
void gpu_row_contiguous(std::vector<mx::array>& inputs, const mx::Stream& stream) {
  if (stream.device.type == mx::Device::gpu) {
    for (auto& a : inputs) {
      a = mx::contiguous(a, false, stream);
    }
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
  const CpuBackend cpu_backend = cpu_backend_for(op, stream);

  // dtype rule of mx.quantized_matmul: the result type of x and scales.
  auto out_dtype = mx::promote_types(x.dtype(), scales.dtype());
  auto out_shape = x.shape();
  out_shape.back() = static_cast<int>(N);

  std::vector<mx::array> inputs = {
      mx::astype(x, out_dtype, stream),
      w,
      mx::astype(scales, out_dtype, stream),
      mx::astype(biases, out_dtype, stream)};
  gpu_row_contiguous(inputs, stream);
  return mx::array(
      std::move(out_shape),
      out_dtype,
      std::make_shared<QuantizedMatmul>(
          stream, group_size, bits, transpose, cpu_backend),
      std::move(inputs));
}

} // namespace mlx_kernels

namespace mlx_kernels {

namespace {

bool is_supported_head_dim(int D) {
  return D == 64 || D == 80 || D == 96 || D == 128 || D == 256;
}

} // namespace

mx::array flash_attention(
    const mx::array& q,
    const mx::array& k,
    const mx::array& v,
    float scale,
    const std::string& mask_mode,
    const std::optional<mx::array>& mask_opt,
    mx::StreamOrDevice s) {
  constexpr const char* op = "flash_attention";

  // mask kind
  AttnMask kind;
  if (mask_mode.empty()) {
    kind = mask_opt ? AttnMask::Additive : AttnMask::None; // refined below
  } else if (mask_mode == "causal") {
    if (mask_opt) {
      throw ValueError(concat(
          op, ": mask is either the string \"causal\" or an array, not both."));
    }
    kind = AttnMask::Causal;
  } else if (mask_mode == "array") {
    if (!mask_opt) {
      throw ValueError(concat(op, ": mask_mode \"array\" needs a mask array."));
    }
    kind = AttnMask::Additive; // refined below
  } else {
    throw ValueError(concat(
        op, ": unknown mask '", mask_mode,
        "'; mask must be None, \"causal\", or a boolean or additive array."));
  }

  // dtypes
  check_float(op, "q", q);
  if (k.dtype() != q.dtype() || v.dtype() != q.dtype()) {
    throw TypeError(concat(
        op, ": q, k and v must have the same dtype; got ", dtype_str(q.dtype()),
        ", ", dtype_str(k.dtype()), " and ", dtype_str(v.dtype()),
        " (cast them with astype)."));
  }

  // ranks
  for (auto [name, a] : {std::pair<const char*, const mx::array*>{"q", &q},
                         {"k", &k},
                         {"v", &v}}) {
    if (a->ndim() != 4) {
      throw ValueError(concat(
          op, ": ", name, " must be 4-D [B, heads, length, D]; got shape ",
          shape_str(a->shape()), "."));
    }
  }

  // shapes
  const int B = q.shape(0), Hq = q.shape(1), qL = q.shape(2), D = q.shape(3);
  const int Hkv = k.shape(1), kL = k.shape(2);
  if (k.shape(0) != B || v.shape(0) != B) {
    throw ValueError(concat(
        op, ": q, k and v must have the same batch size B; got q ",
        shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ",
        shape_str(v.shape()), "."));
  }
  if (v.shape(1) != Hkv) {
    throw ValueError(concat(
        op, ": k and v must have the same number of heads; got k ",
        shape_str(k.shape()), " and v ", shape_str(v.shape()), "."));
  }
  if (v.shape(2) != kL) {
    throw ValueError(concat(
        op, ": k and v must have the same length kL; got k ",
        shape_str(k.shape()), " and v ", shape_str(v.shape()), "."));
  }
  if (k.shape(3) != D || v.shape(3) != D) {
    throw ValueError(concat(
        op, ": q, k and v must have the same head dimension D; got q ",
        shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ",
        shape_str(v.shape()), "."));
  }
  if (Hkv < 1 || Hq % Hkv != 0) {
    throw ValueError(concat(
        op, ": the number of query heads (", Hq,
        ") must be a multiple of the number of key/value heads (", Hkv, ")."));
  }
  if (!is_supported_head_dim(D)) {
    throw ValueError(concat(
        op, ": head dimension D must be 64, 80, 96, 128 or 256; got ", D, "."));
  }

  const mx::Shape score_shape = {B, Hq, qL, kL};
  auto stream = mx::to_stream(s);

  std::vector<mx::array> inputs = {q, k, v};
  if (mask_opt) {
    const mx::array& mask = *mask_opt;
    if (mask.ndim() > 4) {
      throw ValueError(concat(
          op, ": mask must have at most 4 dimensions (broadcastable to [B, Hq, "
              "qL, kL] = ", shape_str(score_shape), "); got shape ",
          shape_str(mask.shape()), "."));
    }
    for (int d = 1; d <= static_cast<int>(mask.ndim()); ++d) {
      int m = mask.shape(-d);
      if (m != 1 && m != score_shape[4 - d]) {
        throw ValueError(concat(
            op, ": mask of shape ", shape_str(mask.shape()),
            " cannot be broadcast to [B, Hq, qL, kL] = ",
            shape_str(score_shape), "."));
      }
    }
    if (mask.dtype() == mx::bool_) {
      kind = AttnMask::Bool;
    } else {
      // As MLX: an additive mask's dtype must promote to the dtype of q.
      bool ok = mx::issubdtype(mask.dtype(), mx::number) &&
          !mx::issubdtype(mask.dtype(), mx::complexfloating) &&
          mx::promote_types(mask.dtype(), q.dtype()) == q.dtype();
      if (!ok) {
        throw TypeError(concat(
            op, ": mask must be boolean or an additive mask whose dtype "
                "promotes to q's dtype ", dtype_str(q.dtype()), "; got ",
            dtype_str(mask.dtype()), "."));
      }
      kind = AttnMask::Additive;
    }
    auto m = kind == AttnMask::Additive ? mx::astype(mask, q.dtype(), stream)
                                        : mask;
    // A broadcast view: the kernel reads it through its (zero) strides.
    inputs.push_back(mx::broadcast_to(m, score_shape, stream));
  }

  require_backend(op, stream);
  const CpuBackend cpu_backend = cpu_backend_for(op, stream);
  // GPU kernels read q, k and v row-contiguous; the mask stays a broadcast
  // view (read through its strides, never materialised).
  {
    std::vector<mx::array> qkv(inputs.begin(), inputs.begin() + 3);
    gpu_row_contiguous(qkv, stream);
    std::copy(qkv.begin(), qkv.end(), inputs.begin());
  }

  return mx::array(
      {B, Hq, qL, D},
      q.dtype(),
      std::make_shared<FlashAttention>(stream, scale, kind, cpu_backend),
      std::move(inputs));
}

} // namespace mlx_kernels
