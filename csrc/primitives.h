// MLX primitives of the library. Each one holds the op's static parameters,
// evaluates itself through one entry point per backend, and knows its
// transforms (vjp, jvp, vmap) so that mx.grad, mx.vmap and mx.compile work.
#pragma once

#include "mlx/primitives.h"

#include "cpu_backend.h"
#include "flash_attention_params.h"
#include "quantized_matmul_params.h"

namespace mlx_kernels {

namespace mx = mlx::core;

// inputs: x [..., K] (any strides), w uint32, scales, biases (same dtype as
// x and the output). Output [..., N].
class QuantizedMatmul : public mx::UnaryPrimitive {
 public:
  QuantizedMatmul(
      mx::Stream stream,
      int group_size,
      int bits,
      bool transpose,
      CpuBackend cpu_backend)
      : mx::UnaryPrimitive(stream),
        group_size_(group_size),
        bits_(bits),
        transpose_(transpose),
        cpu_backend_(cpu_backend) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  std::vector<mx::array> jvp(
      const std::vector<mx::array>& primals,
      const std::vector<mx::array>& tangents,
      const std::vector<int>& argnums) override;
  std::vector<mx::array> vjp(
      const std::vector<mx::array>& primals,
      const std::vector<mx::array>& cotangents,
      const std::vector<int>& argnums,
      const std::vector<mx::array>& outputs) override;
  std::pair<std::vector<mx::array>, std::vector<int>> vmap(
      const std::vector<mx::array>& inputs,
      const std::vector<int>& axes) override;

  const char* name() const override {
    return "MlxKernelsQuantizedMatmul";
  }
  bool is_equivalent(const mx::Primitive& other) const override;
  std::vector<mx::Shape> output_shapes(
      const std::vector<mx::array>& inputs) override;

  // The problem this primitive computes for the given (validated) inputs.
  QmmParams params(const std::vector<mx::array>& inputs) const;

 private:
  int group_size_;
  int bits_;
  bool transpose_;
  CpuBackend cpu_backend_; // CPU streams: native kernel or Metal simulator
};

// inputs: q [B, Hq, qL, D], k and v [B, Hkv, kL, D] (any strides, one dtype),
// and for the array masks the mask broadcast to [B, Hq, qL, kL] (bool, or the
// dtype of q). Output [B, Hq, qL, D], dtype of q.
class FlashAttention : public mx::UnaryPrimitive {
 public:
  FlashAttention(mx::Stream stream, float scale, AttnMask mask)
      : mx::UnaryPrimitive(stream), scale_(scale), mask_(mask) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override;
  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override;

  std::vector<mx::array> jvp(
      const std::vector<mx::array>& primals,
      const std::vector<mx::array>& tangents,
      const std::vector<int>& argnums) override;
  std::vector<mx::array> vjp(
      const std::vector<mx::array>& primals,
      const std::vector<mx::array>& cotangents,
      const std::vector<int>& argnums,
      const std::vector<mx::array>& outputs) override;
  std::pair<std::vector<mx::array>, std::vector<int>> vmap(
      const std::vector<mx::array>& inputs,
      const std::vector<int>& axes) override;

  const char* name() const override {
    return "MlxKernelsFlashAttention";
  }
  bool is_equivalent(const mx::Primitive& other) const override;
  std::vector<mx::Shape> output_shapes(
      const std::vector<mx::array>& inputs) override;

  AttnParams params(const std::vector<mx::array>& inputs) const;

 private:
  float scale_;
  AttnMask mask_;
};

} // namespace mlx_kernels
