// Metal host dispatch of flash_attention, above the MetalEncoder interface.
#pragma once

#include "mlx/array.h"

#include "flash_attention_params.h"
#include "metal/encoder.h"

namespace mlx_kernels::metal {

// Encodes out = attention(q, k, v, mask) on `enc`: the plan's kernel and, for
// a split decode, the merge pass with its float32 partials (allocated here,
// kept alive through enc.add_temporary). q, k, v are row-contiguous, of out's
// dtype; `mask` (array masks only) is the [B, Hq, qL, kL] view, read through
// its strides; `out` is allocated and non-empty.
void encode_flash_attention(
    MetalEncoder& enc,
    const mx::array& q,
    const mx::array& k,
    const mx::array& v,
    const mx::array* mask,
    mx::array& out,
    const AttnParams& p);

} // namespace mlx_kernels::metal
