// The public ops: argument validation, shape and dtype rules, and the graph
// node they add. Every backend receives inputs these functions have checked.
#pragma once

#include <optional>
#include <string>

#include "mlx/array.h"
#include "mlx/utils.h"

namespace mlx_kernels {

namespace mx = mlx::core;

// out = x @ dequantize(w).T  (transpose=true)  or  x @ dequantize(w)  (false),
// with w in the affine packed format of mx.quantize. Mirrors
// mx.quantized_matmul(mode="affine").
mx::array quantized_matmul(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const std::optional<mx::array>& biases,
    bool transpose = true,
    int group_size = 64,
    int bits = 4,
    mx::StreamOrDevice s = {});

// softmax(scale * q k^T + mask) v per head, with k and v shared by groups of
// Hq / Hkv query heads. Mirrors mx.fast.scaled_dot_product_attention.
// q [B, Hq, qL, D], k and v [B, Hkv, kL, D]; D in {64, 80, 96, 128, 256}.
// mask_mode: "" (no mask, or the array `mask`), "causal", or "array" (then
// `mask` is required). `mask` is boolean (True = attend) or additive (a dtype
// that promotes to q's), broadcastable to [B, Hq, qL, kL].
mx::array flash_attention(
    const mx::array& q,
    const mx::array& k,
    const mx::array& v,
    float scale,
    const std::string& mask_mode = "",
    const std::optional<mx::array>& mask = std::nullopt,
    mx::StreamOrDevice s = {});

} // namespace mlx_kernels
