// Row-contiguous views of CPU inputs: contiguous arrays pass through
// untouched; anything else (slices, transposes, broadcasts) is gathered into
// a new row-contiguous array by a task enqueued on the same stream.
#pragma once

#include <vector>

#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"

namespace mlx_kernels::cpu {

namespace mx = mlx::core;

// Returns `a` itself when it is row-contiguous; otherwise a gathered copy,
// which is also appended to `temporaries` (hand them to the encoder after the
// kernel's dispatch so they outlive it).
mx::array row_contiguous(
    const mx::array& a,
    mx::cpu::CommandEncoder& enc,
    std::vector<mx::array>& temporaries);

} // namespace mlx_kernels::cpu
