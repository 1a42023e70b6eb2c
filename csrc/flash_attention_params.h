// The shape of one attention problem, shared by every backend's launch plan.
#pragma once

#include <cstdint>

namespace mlx_kernels {

// How the scores are masked. The array kinds come with one more input: the
// mask broadcast (as a view, no copy) to [B, Hq, qL, kL].
enum class AttnMask : int {
  None = 0,
  Causal = 1, // query i attends keys j <= i + kL - qL (bottom-right aligned)
  Bool = 2, // True = attend
  Additive = 3, // added to the scaled scores; dtype of q
};

inline const char* attn_mask_name(AttnMask m) {
  switch (m) {
    case AttnMask::None: return "none";
    case AttnMask::Causal: return "causal";
    case AttnMask::Bool: return "bool";
    case AttnMask::Additive: return "additive";
  }
  return "?";
}

struct AttnParams {
  int B; // batch
  int Hq; // query heads
  int Hkv; // key/value heads (Hq is a multiple of it)
  int qL; // queries per head
  int kL; // keys per head
  int D; // head dimension (q, k and v alike)
  float scale;
  AttnMask mask;

  int group() const {
    return Hq / Hkv;
  }
};

} // namespace mlx_kernels
