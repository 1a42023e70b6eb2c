// Python bindings. They share MLX's nanobind domain (NB_DOMAIN mlx in
// CMakeLists.txt), so mx.array, mx.Stream and mx.Device pass through as MLX's
// own types. Docstrings and defaults live in python/mlx_kernels/.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>

#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include "cpu_backend.h"
#include "errors.h"
#include "metal/qmm_plan.h"
#include "metal/sim_encoder.h"
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

  // --- The Metal simulator and the Metal launch plan (tests, tools) -------
  m.def(
      "set_cpu_backend",
      [](bool metal_simulator, bool shuffle, uint64_t seed) {
        mlx_kernels::set_cpu_backend({metal_simulator, shuffle, seed});
      },
      "metal_simulator"_a,
      "shuffle"_a = false,
      "seed"_a = 0);
  m.def("get_cpu_backend", [] {
    auto b = mlx_kernels::current_cpu_backend();
    return std::make_tuple(b.metal_simulator, b.shuffle, b.seed);
  });
  m.def("metal_simulator_status", [] {
    std::string why;
    bool ok = mlx_kernels::metal::simulator_available(&why);
    return std::make_tuple(ok, why);
  });
  m.def("metal_simulator_kernels", &mlx_kernels::metal::simulator_kernel_names);
  m.def(
      "plan_metal_quantized_matmul",
      [](int64_t M, int64_t N, int64_t K, int group_size, int bits, bool transpose,
         const std::string& dtype) {
        mlx_kernels::QmmParams p{M, N, K, group_size, bits, transpose};
        auto plan = mlx_kernels::metal::plan_quantized_matmul(p, dtype);
        nb::dict d;
        d["kernel"] = mlx_kernels::metal::kernel_kind_name(plan.kernel);
        d["rows"] = plan.rows;
        d["name"] = plan.name;
        d["grid"] = std::make_tuple(plan.grid.x, plan.grid.y, plan.grid.z);
        d["threadgroup"] = std::make_tuple(
            plan.threadgroup.x, plan.threadgroup.y, plan.threadgroup.z);
        return d;
      },
      "M"_a, "N"_a, "K"_a, "group_size"_a, "bits"_a, "transpose"_a, "dtype"_a);
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
