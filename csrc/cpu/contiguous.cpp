#include "cpu/contiguous.h"

#include <cstring>

#include "mlx/allocator.h"

namespace mlx_kernels::cpu {

namespace {

// Copies the elements of a strided n-d array into dst in row-major order.
template <typename Word>
void gather(
    const Word* src,
    Word* dst,
    const mx::Shape& shape,
    const mx::Strides& strides) {
  const int ndim = static_cast<int>(shape.size());
  if (ndim == 0) {
    dst[0] = src[0];
    return;
  }
  const int64_t inner = shape.back();
  const int64_t inner_stride = strides.back();
  int64_t outer = 1;
  for (int d = 0; d + 1 < ndim; ++d) {
    outer *= shape[d];
  }
  std::vector<int64_t> index(ndim, 0);
  for (int64_t o = 0; o < outer; ++o) {
    int64_t offset = 0;
    for (int d = 0; d + 1 < ndim; ++d) {
      offset += index[d] * strides[d];
    }
    const Word* s = src + offset;
    for (int64_t i = 0; i < inner; ++i) {
      dst[i] = s[i * inner_stride];
    }
    dst += inner;
    for (int d = ndim - 2; d >= 0; --d) {
      if (++index[d] < shape[d]) {
        break;
      }
      index[d] = 0;
    }
  }
}

} // namespace

mx::array row_contiguous(
    const mx::array& a,
    mx::cpu::CommandEncoder& enc,
    std::vector<mx::array>& temporaries) {
  if (a.flags().row_contiguous) {
    return a;
  }
  mx::array out(a.shape(), a.dtype(), nullptr, {});
  out.set_data(mx::allocator::malloc(out.nbytes()));
  enc.set_input_array(a);
  enc.set_output_array(out);
  enc.dispatch([src = mx::array::unsafe_weak_copy(a),
                dst = mx::array::unsafe_weak_copy(out)]() mutable {
    if (dst.size() == 0) {
      return;
    }
    switch (src.itemsize()) {
      case 1: gather(src.data<uint8_t>(), dst.data<uint8_t>(), src.shape(), src.strides()); break;
      case 2: gather(src.data<uint16_t>(), dst.data<uint16_t>(), src.shape(), src.strides()); break;
      case 4: gather(src.data<uint32_t>(), dst.data<uint32_t>(), src.shape(), src.strides()); break;
      default: gather(src.data<uint64_t>(), dst.data<uint64_t>(), src.shape(), src.strides()); break;
    }
  });
  temporaries.push_back(out);
  return out;
}

} // namespace mlx_kernels::cpu
