#include "primitives.h"

#include "mlx/ops.h"

#include "backends.h"
#include "cpu/quantized_matmul.h"
#if defined(MLX_KERNELS_BUILD_CUDA)
#include "cuda/quantized_matmul.h"
#endif
#include "errors.h"
#include "ops.h"

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
  cpu::quantized_matmul(
      inputs[0], inputs[1], inputs[2], inputs[3], out, params(inputs), stream());
}

void QuantizedMatmul::eval_gpu(
    const std::vector<mx::array>& inputs,
    mx::array& out) {
#if defined(MLX_KERNELS_BUILD_CUDA)
  cuda::quantized_matmul(
      inputs[0], inputs[1], inputs[2], inputs[3], out, params(inputs), stream());
#else
  // The op refuses GPU streams while no GPU kernels exist (backends.h).
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
      transpose_ == o.transpose_;
}

std::vector<mx::Shape> QuantizedMatmul::output_shapes(
    const std::vector<mx::array>& inputs) {
  auto shape = inputs[0].shape();
  shape.back() = static_cast<int>(params(inputs).N);
  return {shape};
}

} // namespace mlx_kernels
