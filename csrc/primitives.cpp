#include "primitives.h"

#include <limits>

#include "mlx/ops.h"

#include "backends.h"
#include "cpu/flash_attention.h"
#include "cpu/quantized_matmul.h"
#if defined(MLX_KERNELS_BUILD_CUDA)
#include "cuda/flash_attention.h"
#include "cuda/quantized_matmul.h"
#endif
#include "errors.h"
#include "metal/simulated.h"
#include "ops.h"

#if defined(MLX_KERNELS_BUILD_METAL)
#include "metal/mtl_eval.h"
#endif

namespace mlx_kernels {

QmmParams QuantizedMatmul::params(const std::vector<mx::array>& inputs) const {
  const auto& x = inputs[0];
  const auto& w = inputs[1];
  QmmParams p;
  p.K = x.shape(-1);
  p.M = 1;
  for (int d = 0; d + 1 < static_cast<int>(x.ndim()); ++d) {
    p.M *= x.shape(d);
  }
  p.N = transpose_ ? w.shape(0) : int64_t(w.shape(1)) * (32 / bits_);
  p.group_size = group_size_;
  p.bits = bits_;
  p.transpose = transpose_;
  return p;
}

void QuantizedMatmul::eval_cpu(
    const std::vector<mx::array>& inputs,
    mx::array& out) {
  if (cpu_backend_.metal_simulator) {
    metal::eval_quantized_matmul_simulated(
        inputs, out, params(inputs), cpu_backend_, stream());
  } else {
    cpu::quantized_matmul(
        inputs[0], inputs[1], inputs[2], inputs[3], out, params(inputs), stream());
  }
}

void QuantizedMatmul::eval_gpu(
    const std::vector<mx::array>& inputs,
    mx::array& out) {
#if defined(MLX_KERNELS_BUILD_METAL)
  metal::eval_quantized_matmul_gpu(inputs, out, params(inputs), stream());
#elif defined(MLX_KERNELS_BUILD_CUDA)
  cuda::quantized_matmul(
      inputs[0], inputs[1], inputs[2], inputs[3], out, params(inputs), stream());
#else
  // The op refuses GPU streams of backends without kernels (backends.h).
  throw NotImplemented(concat(
      "mlx_kernels.quantized_matmul: the ", gpu_backend_name(),
      " backend is not implemented yet."));
#endif
}

std::vector<mx::array> QuantizedMatmul::jvp(
    const std::vector<mx::array>& primals,
    const std::vector<mx::array>& tangents,
    const std::vector<int>& argnums) {
  const auto& x = primals[0];
  const auto& w = primals[1];
  const auto& scales = primals[2];
  const auto& biases = primals[3];
  std::optional<mx::array> result;
  auto add = [&](mx::array term) {
    result = result ? mx::add(*result, term, stream()) : term;
  };
  for (size_t i = 0; i < argnums.size(); ++i) {
    const auto& t = tangents[i];
    switch (argnums[i]) {
      case 0:
        add(quantized_matmul(t, w, scales, biases, transpose_, group_size_, bits_, stream()));
        break;
      case 1:
        throw ValueError(
            "quantized_matmul: no JVP with respect to the quantized weights w.");
      case 2: // d/dscales: the weights dequantized with scales = t, biases = 0
        add(quantized_matmul(
            x, w, t, mx::zeros_like(biases, stream()), transpose_, group_size_,
            bits_, stream()));
        break;
      case 3: // d/dbiases: scales = 0, biases = t
        add(quantized_matmul(
            x, w, mx::zeros_like(scales, stream()), t, transpose_, group_size_,
            bits_, stream()));
        break;
    }
  }
  return {*result};
}

std::vector<mx::array> QuantizedMatmul::vjp(
    const std::vector<mx::array>& primals,
    const std::vector<mx::array>& cotangents,
    const std::vector<int>& argnums,
    const std::vector<mx::array>&) {
  const auto& x = primals[0];
  const auto& w = primals[1];
  const auto& scales = primals[2];
  const auto& biases = primals[3];
  const auto& cotan = cotangents[0];
  std::vector<mx::array> grads;
  // dL/dW for the dequantized W, laid out like w ([rows, cols], grouped along
  // cols): computed once if scales or biases need it.
  std::optional<mx::array> dW_grouped;
  auto weight_grad = [&]() -> const mx::array& {
    if (!dW_grouped) {
      const int K = x.shape(-1);
      const int N = cotan.shape(-1);
      auto x2 = mx::reshape(x, {-1, K}, stream());
      auto c2 = mx::reshape(cotan, {-1, N}, stream());
      auto dW = transpose_
          ? mx::matmul(mx::transpose(c2, stream()), x2, stream()) // [N, K]
          : mx::matmul(mx::transpose(x2, stream()), c2, stream()); // [K, N]
      auto rows = dW.shape(0);
      auto cols = dW.shape(1);
      dW_grouped = mx::reshape(dW, {rows, cols / group_size_, group_size_}, stream());
    }
    return *dW_grouped;
  };
  for (int arg : argnums) {
    switch (arg) {
      case 0:
        grads.push_back(quantized_matmul(
            cotan, w, scales, biases, !transpose_, group_size_, bits_, stream()));
        break;
      case 1:
        throw ValueError(
            "quantized_matmul: no gradient with respect to the quantized weights w.");
      case 2: {
        // dL/dscales[r, g] = sum_j dW[r, g, j] * q[r, g, j]
        auto q = mx::dequantize(
            w, mx::ones_like(scales, stream()), mx::zeros_like(biases, stream()),
            group_size_, bits_, "affine", std::nullopt, std::nullopt, stream());
        auto qg = mx::reshape(q, weight_grad().shape(), stream());
        grads.push_back(mx::astype(
            mx::sum(mx::multiply(weight_grad(), qg, stream()), -1, false, stream()),
            scales.dtype(), stream()));
        break;
      }
      case 3:
        // dL/dbiases[r, g] = sum_j dW[r, g, j]
        grads.push_back(mx::astype(
            mx::sum(weight_grad(), -1, false, stream()), biases.dtype(), stream()));
        break;
    }
  }
  return grads;
}

std::pair<std::vector<mx::array>, std::vector<int>> QuantizedMatmul::vmap(
    const std::vector<mx::array>& inputs,
    const std::vector<int>& axes) {
  if (axes[1] >= 0 || axes[2] >= 0 || axes[3] >= 0) {
    throw NotImplemented(
        "quantized_matmul: vmap over w, scales or biases is not supported "
        "(only over x).");
  }
  // The mapped axis of x is one more leading dimension: move it to the front.
  auto x = inputs[0];
  if (axes[0] != 0) {
    x = mx::moveaxis(x, axes[0], 0, stream());
  }
  auto out = quantized_matmul(
      x, inputs[1], inputs[2], inputs[3], transpose_, group_size_, bits_, stream());
  return {{out}, {0}};
}

bool QuantizedMatmul::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const QuantizedMatmul&>(other);
  return group_size_ == o.group_size_ && bits_ == o.bits_ &&
      transpose_ == o.transpose_ && cpu_backend_ == o.cpu_backend_;
}

std::vector<mx::Shape> QuantizedMatmul::output_shapes(
    const std::vector<mx::array>& inputs) {
  auto shape = inputs[0].shape();
  shape.back() = static_cast<int>(params(inputs).N);
  return {shape};
}

// ---------------------------------------------------------------------------
// FlashAttention

AttnParams FlashAttention::params(const std::vector<mx::array>& inputs) const {
  const auto& q = inputs[0];
  const auto& k = inputs[1];
  AttnParams p;
  p.B = q.shape(0);
  p.Hq = q.shape(1);
  p.qL = q.shape(2);
  p.D = q.shape(3);
  p.Hkv = k.shape(1);
  p.kL = k.shape(2);
  p.scale = scale_;
  p.mask = mask_;
  return p;
}

void FlashAttention::eval_cpu(
    const std::vector<mx::array>& inputs,
    mx::array& out) {
  if (cpu_backend_.metal_simulator) {
    metal::eval_flash_attention_simulated(
        inputs, out, params(inputs), cpu_backend_, stream());
  } else {
    cpu::flash_attention(inputs, out, params(inputs), stream());
  }
}

void FlashAttention::eval_gpu(
    const std::vector<mx::array>& inputs,
    mx::array& out) {
#if defined(MLX_KERNELS_BUILD_METAL)
  metal::eval_flash_attention_gpu(inputs, out, params(inputs), stream());
#elif defined(MLX_KERNELS_BUILD_CUDA)
  cuda::flash_attention(inputs, out, params(inputs), stream());
#else
  // The op refuses GPU streams of backends without kernels (backends.h).
  throw NotImplemented(concat(
      "mlx_kernels.flash_attention: the ", gpu_backend_name(),
      " backend is not implemented yet."));
#endif
}

namespace {

// The reference decomposition the transforms differentiate, in float32:
//   S = scale * q k^T (+ mask), P = softmax(S), out = P v,
// with the heads of q grouped as [B, Hkv, G, qL, D] against k and v as
// [B, Hkv, 1, kL, D], so that GQA broadcasts instead of repeating k and v.
// Masked scores (boolean and causal masks) take the lowest float32, as MLX's
// own fallback fills them with finfo.min: a row with every key masked gets
// uniform weights.
struct AttnRef {
  int B, Hq, Hkv, G, qL, kL, D;
  mx::array q5, k5, v5, P;
  std::optional<mx::array> keep; // boolean and causal masks: the visible scores

  // A masked score is a constant: no derivative flows through it (this
  // matters for fully masked rows, whose weights are uniform, not zero).
  mx::array mask_grad(const mx::array& dS, mx::Stream s) const {
    return keep ? mx::where(*keep, dS, mx::array(0.f), s) : dS;
  }
};

mx::array group_heads(const mx::array& a, const AttnRef& r, int last, mx::Stream s) {
  // [B, Hq, qL, last] -> [B, Hkv, G, qL, last]
  return mx::reshape(
      mx::astype(a, mx::float32, s), {r.B, r.Hkv, r.G, r.qL, last}, s);
}

mx::array ungroup_heads(const mx::array& a, const AttnRef& r, int last, mx::Stream s) {
  return mx::reshape(a, {r.B, r.Hq, r.qL, last}, s);
}

mx::array kv5(const mx::array& a, mx::Stream s) {
  return mx::expand_dims(mx::astype(a, mx::float32, s), 2, s);
}

mx::array transpose_last(const mx::array& a, mx::Stream s) {
  return mx::swapaxes(a, -1, -2, s);
}

AttnRef attention_reference(
    const std::vector<mx::array>& in, float scale, AttnMask kind, mx::Stream s) {
  const auto& q = in[0];
  const auto& k = in[1];
  const int B = q.shape(0), Hq = q.shape(1), qL = q.shape(2), D = q.shape(3);
  const int Hkv = k.shape(1), kL = k.shape(2);
  AttnRef r{B, Hq, Hkv, Hq / Hkv, qL, kL, D, q, q, q, q, std::nullopt};
  r.q5 = group_heads(q, r, D, s);
  r.k5 = kv5(k, s);
  r.v5 = kv5(in[2], s);
  auto S = mx::multiply(
      mx::matmul(r.q5, transpose_last(r.k5, s), s),
      mx::array(scale, mx::float32), s);
  const mx::array lowest(std::numeric_limits<float>::lowest(), mx::float32);
  switch (kind) {
    case AttnMask::None: break;
    case AttnMask::Causal: {
      auto rows = mx::reshape(mx::arange(kL - qL, kL, s), {qL, 1}, s);
      auto cols = mx::reshape(mx::arange(0, kL, s), {1, kL}, s);
      r.keep = mx::greater_equal(rows, cols, s);
      S = mx::where(*r.keep, S, lowest, s);
      break;
    }
    case AttnMask::Bool:
      r.keep = mx::reshape(in[3], {B, Hkv, r.G, qL, kL}, s);
      S = mx::where(*r.keep, S, lowest, s);
      break;
    case AttnMask::Additive:
      S = mx::add(S, group_heads(in[3], r, kL, s), s);
      break;
  }
  r.P = mx::softmax(S, -1, /*precise=*/true, s);
  return r;
}

} // namespace

std::vector<mx::array> FlashAttention::jvp(
    const std::vector<mx::array>& primals,
    const std::vector<mx::array>& tangents,
    const std::vector<int>& argnums) {
  auto s = stream();
  auto r = attention_reference(primals, scale_, mask_, s);
  const mx::array sc(scale_, mx::float32);
  std::optional<mx::array> dS, dO;
  auto add = [&](std::optional<mx::array>& acc, mx::array term) {
    acc = acc ? mx::add(*acc, term, s) : term;
  };
  for (size_t i = 0; i < argnums.size(); ++i) {
    const auto& t = tangents[i];
    switch (argnums[i]) {
      case 0:
        add(dS, mx::multiply(
                    mx::matmul(group_heads(t, r, r.D, s), transpose_last(r.k5, s), s),
                    sc, s));
        break;
      case 1:
        add(dS, mx::multiply(
                    mx::matmul(r.q5, transpose_last(kv5(t, s), s), s), sc, s));
        break;
      case 2:
        add(dO, mx::matmul(r.P, kv5(t, s), s));
        break;
      case 3:
        if (mask_ == AttnMask::Additive) {
          add(dS, group_heads(t, r, r.kL, s));
        }
        break;
    }
  }
  if (dS) {
    auto dSm = r.mask_grad(*dS, s);
    auto dP = mx::multiply(
        r.P,
        mx::subtract(dSm, mx::sum(mx::multiply(r.P, dSm, s), -1, true, s), s), s);
    add(dO, mx::matmul(dP, r.v5, s));
  }
  if (!dO) {
    dO = mx::zeros_like(r.q5, s);
  }
  return {mx::astype(ungroup_heads(*dO, r, r.D, s), primals[0].dtype(), s)};
}

std::vector<mx::array> FlashAttention::vjp(
    const std::vector<mx::array>& primals,
    const std::vector<mx::array>& cotangents,
    const std::vector<int>& argnums,
    const std::vector<mx::array>&) {
  auto s = stream();
  auto r = attention_reference(primals, scale_, mask_, s);
  const mx::array sc(scale_, mx::float32);
  auto dO = group_heads(cotangents[0], r, r.D, s);
  std::optional<mx::array> dS;
  auto score_grad = [&]() -> const mx::array& {
    if (!dS) {
      auto dP = mx::matmul(dO, transpose_last(r.v5, s), s);
      dS = r.mask_grad(
          mx::multiply(
              r.P,
              mx::subtract(dP, mx::sum(mx::multiply(dP, r.P, s), -1, true, s), s),
              s),
          s);
    }
    return *dS;
  };
  std::vector<mx::array> grads;
  for (int arg : argnums) {
    switch (arg) {
      case 0: {
        auto dq = mx::multiply(mx::matmul(score_grad(), r.k5, s), sc, s);
        grads.push_back(
            mx::astype(ungroup_heads(dq, r, r.D, s), primals[0].dtype(), s));
        break;
      }
      case 1: {
        auto dk = mx::multiply(
            mx::sum(mx::matmul(transpose_last(score_grad(), s), r.q5, s), 2, false, s),
            sc, s);
        grads.push_back(mx::astype(dk, primals[1].dtype(), s));
        break;
      }
      case 2: {
        auto dv = mx::sum(mx::matmul(transpose_last(r.P, s), dO, s), 2, false, s);
        grads.push_back(mx::astype(dv, primals[2].dtype(), s));
        break;
      }
      case 3:
        if (mask_ == AttnMask::Additive) {
          grads.push_back(mx::astype(
              ungroup_heads(score_grad(), r, r.kL, s), primals[3].dtype(), s));
        } else {
          // A boolean mask has no gradient (as MLX: zeros).
          grads.push_back(mx::zeros_like(primals[3], s));
        }
        break;
    }
  }
  return grads;
}

std::pair<std::vector<mx::array>, std::vector<int>> FlashAttention::vmap(
    const std::vector<mx::array>& inputs,
    const std::vector<int>& axes) {
  auto s = stream();
  int N = -1;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (axes[i] >= 0) {
      N = inputs[i].shape(axes[i]);
      break;
    }
  }
  // The mapped axis joins the batch axis: [N, B, ...] -> [N * B, ...]. Inputs
  // without a mapped axis are broadcast along it first.
  std::vector<mx::array> flat;
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto x = inputs[i];
    if (axes[i] >= 0) {
      x = mx::moveaxis(x, axes[i], 0, s);
    } else {
      auto shape = x.shape();
      shape.insert(shape.begin(), N);
      x = mx::broadcast_to(mx::expand_dims(x, 0, s), shape, s);
    }
    auto shape = x.shape();
    mx::Shape merged = {shape[0] * shape[1]};
    merged.insert(merged.end(), shape.begin() + 2, shape.end());
    flat.push_back(mx::reshape(x, merged, s));
  }
  const auto& q = flat[0];
  auto out = mx::array(
      {q.shape(0), q.shape(1), q.shape(2), flat[2].shape(3)},
      q.dtype(),
      std::make_shared<FlashAttention>(s, scale_, mask_, cpu_backend_),
      flat);
  return {
      {mx::reshape(out, {N, q.shape(0) / N, q.shape(1), q.shape(2), flat[2].shape(3)}, s)},
      {0}};
}

bool FlashAttention::is_equivalent(const mx::Primitive& other) const {
  const auto& o = static_cast<const FlashAttention&>(other);
  return scale_ == o.scale_ && mask_ == o.mask_ && cpu_backend_ == o.cpu_backend_;
}

std::vector<mx::Shape> FlashAttention::output_shapes(
    const std::vector<mx::array>& inputs) {
  const auto& q = inputs[0];
  return {{q.shape(0), q.shape(1), q.shape(2), inputs[2].shape(3)}};
}

} // namespace mlx_kernels
