// Python bindings. They share MLX's nanobind domain (NB_DOMAIN mlx in
// CMakeLists.txt), so mx.array, mx.Stream and mx.Device pass through as MLX's
// own types. Docstrings and defaults live in python/mlx_kernels/.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>

#include "errors.h"
#include "ops.h"

namespace nb = nanobind;
using namespace nb::literals;

NB_MODULE(_ext, m) {
  m.doc() = "Compiled core of mlx_kernels (use the mlx_kernels package).";

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const mlx_kernels::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const mlx_kernels::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const mlx_kernels::NotImplemented& e) {
      PyErr_SetString(PyExc_NotImplementedError, e.what());
    }
  });

  m.def(
      "quantized_matmul",
      &mlx_kernels::quantized_matmul,
      "x"_a,
      "w"_a,
      "scales"_a,
      "biases"_a.none(),
      "transpose"_a,
      "group_size"_a,
      "bits"_a,
      nb::kw_only(),
      "stream"_a.none());

  m.def(
      "flash_attention",
      &mlx_kernels::flash_attention,
      "q"_a,
      "k"_a,
      "v"_a,
      nb::kw_only(),
      "scale"_a,
      "mask_mode"_a,
      "mask"_a.none(),
      "stream"_a.none());
}
