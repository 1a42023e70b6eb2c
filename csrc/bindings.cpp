// Python bindings. They share MLX's nanobind domain (NB_DOMAIN mlx in
// CMakeLists.txt), so mx.array, mx.Stream and mx.Device pass through as MLX's
// own types. Docstrings and defaults live in python/mlx_kernels/.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>

#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include "cpu_backend.h"
#include "cuda/attn_plan.h"
#include "cuda/qmm_plan.h"
#if defined(MLX_KERNELS_BUILD_CUDA)
#include "cuda/flash_attention.h"
#include "cuda/quantized_matmul.h"
#endif
#include "errors.h"
#include "metal/attn_plan.h"
#include "metal/qmm_plan.h"
#include "metal/sim_encoder.h"
#include "ops.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

// The plan bindings' mask argument ("none", "causal", "bool", "additive");
// anything else plans as "none".
mlx_kernels::AttnMask mask_kind(const std::string& mask) {
  for (auto k : {mlx_kernels::AttnMask::None, mlx_kernels::AttnMask::Causal,
                 mlx_kernels::AttnMask::Bool, mlx_kernels::AttnMask::Additive}) {
    if (mask == mlx_kernels::attn_mask_name(k)) {
      return k;
    }
  }
  return mlx_kernels::AttnMask::None;
}

#if !defined(MLX_KERNELS_BUILD_CUDA)
// What the CUDA-only bindings raise in a build without the CUDA backend.
[[noreturn]] void throw_no_cuda_backend(const char* binding) {
  throw mlx_kernels::NotImplemented(mlx_kernels::concat(
      binding, ": this build of mlx_kernels has no CUDA backend (it is built against a CUDA "
      "build of MLX only)."));
}
#endif

} // namespace

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
      "plan_metal_flash_attention",
      [](int B, int Hq, int Hkv, int qL, int kL, int D, const std::string& mask,
         const std::string& dtype) {
        const mlx_kernels::AttnMask kind = mask_kind(mask);
        mlx_kernels::AttnParams p{B, Hq, Hkv, qL, kL, D, 1.0f, kind};
        auto plan = mlx_kernels::metal::plan_flash_attention(p, dtype);
        auto dim3 = [](const mlx_kernels::metal::Dim3& d) {
          return std::make_tuple(d.x, d.y, d.z);
        };
        nb::dict d;
        d["kernel"] = mlx_kernels::metal::attn_kernel_name(plan.kernel);
        d["name"] = plan.name;
        d["grid"] = dim3(plan.grid);
        d["threadgroup"] = dim3(plan.threadgroup);
        d["block_q"] = plan.block_q;
        d["block_k"] = plan.block_k;
        d["rows"] = plan.rows;
        d["row_tiles"] = plan.row_tiles;
        d["splits"] = plan.splits;
        d["chunk"] = plan.chunk;
        d["threadgroup_memory"] = plan.threadgroup_memory;
        d["merge_name"] = plan.merge_name;
        d["merge_grid"] = dim3(plan.merge_grid);
        d["merge_threadgroup"] = dim3(plan.merge_threadgroup);
        return d;
      },
      "B"_a, "Hq"_a, "Hkv"_a, "qL"_a, "kL"_a, "D"_a, "mask"_a, "dtype"_a);

  // --- The CUDA launch plans of both ops (plain C++, tested anywhere) --------
  m.def(
      "plan_cuda_quantized_matmul",
      [](int64_t M, int64_t N, int64_t K, int group_size, int bits, bool transpose,
         const std::string& dtype, int num_sms,
         const std::optional<std::vector<int>>& cluster_capacity) {
        namespace cu = mlx_kernels::cuda;
        mlx_kernels::QmmParams p{M, N, K, group_size, bits, transpose};
        // cluster_capacity[s - 1]: clusters of s bulk blocks the device runs at
        // once (cuda_bulk_cluster_capacity() on a CUDA build); None: num_sms / s.
        int cap[cu::kMaxClusterTable] = {};
        if (cluster_capacity) {
          if (cluster_capacity->size() != cu::kMaxClusterTable - 1) {
            throw mlx_kernels::ValueError(mlx_kernels::concat(
                "plan_cuda_quantized_matmul: cluster_capacity must list 8 counts (clusters of 1..8 "
                "blocks), got ", cluster_capacity->size(), "."));
          }
          for (size_t i = 0; i < cluster_capacity->size(); ++i) {
            if ((*cluster_capacity)[i] < 1) {
              throw mlx_kernels::ValueError(mlx_kernels::concat(
                  "plan_cuda_quantized_matmul: cluster_capacity counts must be >= 1, got ",
                  (*cluster_capacity)[i], " for clusters of ", i + 1, "."));
            }
            cap[i + 1] = (*cluster_capacity)[i];
          }
        }
        const cu::QmmPlan plan =
            cu::plan_cuda_qmm(p, dtype == "float32", num_sms, cluster_capacity ? cap : nullptr);
        nb::dict d;
        d["kernel"] = cu::qmm_kernel_name(plan.kernel);
        d["row_tiles"] = plan.row_tiles;
        d["m_tiles"] = plan.m_tiles;
        d["mma_order"] = static_cast<int>(plan.mma_order);
        d["compiled"] = plan.kernel != cu::QmmKernel::kTensorCore ||
            cu::tc_variant_compiled(plan.row_tiles, plan.m_tiles);
        d["k_step"] = plan.k_step;
        d["num_steps"] = plan.num_steps;
        d["steps_per_split"] = plan.steps_per_split;
        d["split_k"] = plan.split_k;
        d["grid"] = std::make_tuple(plan.grid[0], plan.grid[1], plan.grid[2]);
        d["block"] = plan.block;
        d["warps"] = plan.block / 32;
        d["push_partials"] = plan.push_partials;
        d["tiles_per_block"] = plan.tiles_per_block;
        d["ring"] = plan.ring;
        d["row_bytes"] = plan.row_bytes;
        d["x_pitch"] = plan.x_pitch;
        d["smem"] = std::make_tuple(
            plan.smem_x, plan.smem_xsum, plan.smem_partials, plan.smem_ring, plan.smem_bytes);
        d["smem_bytes"] = plan.smem_bytes;
        return d;
      },
      "M"_a, "N"_a, "K"_a, "group_size"_a, "bits"_a, "transpose"_a, "dtype"_a,
      "num_sms"_a = 132, "cluster_capacity"_a = nb::none());
  m.def(
      "cuda_bulk_cluster_capacity",
      []() -> std::vector<int> {
#if defined(MLX_KERNELS_BUILD_CUDA)
        return mlx_kernels::cuda::bulk_cluster_capacities();
#else
        throw_no_cuda_backend("cuda_bulk_cluster_capacity");
#endif
      },
      "How many clusters of 1..8 blocks of the CUDA bulk quantized_matmul kernel (one block "
      "an SM) this GPU runs at once, as the plan uses them (CUDA builds only).");
  m.def(
      "cuda_peak_dram_gbs",
      []() -> double {
#if defined(MLX_KERNELS_BUILD_CUDA)
        return mlx_kernels::cuda::peak_dram_gbs();
#else
        throw_no_cuda_backend("cuda_peak_dram_gbs");
#endif
      },
      "The GPU's peak DRAM bandwidth in GB/s (memory clock x bus width), as the CUDA "
      "flash_attention plan reads it (CUDA builds only).");
  m.def(
      "set_cuda_quantized_matmul_plan_sms",
      [](int sms) { mlx_kernels::cuda::set_qmm_plan_sms(sms); },
      "sms"_a,
      "Tests only: plan the CUDA quantized_matmul for this many SMs (0: the device's).");
  m.def(
      "set_cuda_quantized_matmul_kslice_over_bulk_kb_per_sm",
      [](int64_t kb) { mlx_kernels::cuda::set_qmm_kslice_over_bulk_kb_per_sm(kb); },
      "kb"_a,
      "Tests only: weights the CUDA bulk quantized_matmul kernel would take, up to this many KB "
      "of packed weights an SM, go to the k-slice kernel instead (0: none; below 0: the "
      "default, 124, or MLX_KERNELS_QMM_KSLICE_OVER_BULK_KB_PER_SM).");
  m.def(
      "set_cuda_quantized_matmul_simt_max_kb",
      [](int64_t kb) { mlx_kernels::cuda::set_qmm_simt_small_m_max_kb(kb); },
      "kb"_a,
      "Tests only: float16/bfloat16 x at M = 1 (MLX_KERNELS_QMM_SIMT_MAX_M) on weights of at "
      "most this many KB go to the CUDA simt_qmv kernel (0: none, so the k-slice kernel takes "
      "them; below 0: the default, 1024, or MLX_KERNELS_QMM_SIMT_MAX_KB).");
  m.def(
      "set_cuda_quantized_matmul_bulk_omit",
      [](int mask) {
        if (mask < 0 || mask > mlx_kernels::cuda::kBulkOmitAll) {
          throw mlx_kernels::ValueError(
              "set_cuda_quantized_matmul_bulk_omit: mask must be in 0..7 (1: math, 2: x "
              "staging, 4: split-K reduction), got " + std::to_string(mask) + ".");
        }
        mlx_kernels::cuda::set_qmm_bulk_omit(mask);
      },
      "mask"_a,
      "Measurement only (benchmarks/ncu_qmm_omit.py): leave parts out of the CUDA bulk "
      "quantized_matmul kernel (1: math, 2: x staging, 4: split-K reduction) so that ncu "
      "times the rest. Results are WRONG until it is set back to 0.");
  m.def(
      "set_cuda_quantized_matmul_bulk_trace",
      [](bool on) { mlx_kernels::cuda::set_qmm_bulk_trace(on); },
      "on"_a,
      "Measurement only (benchmarks/trace_qmm_bulk.py): run the CUDA bulk quantized_matmul "
      "kernel's trace variant (float16 x, 4-bit weights), which records per warp when its "
      "stages arrived and were computed; read it with cuda_quantized_matmul_bulk_trace().");
  m.def(
      "cuda_quantized_matmul_bulk_trace",
      []() -> nb::dict {
#if defined(MLX_KERNELS_BUILD_CUDA)
        const auto r = mlx_kernels::cuda::read_bulk_trace();
        nb::dict d;
        d["grid"] = nb::make_tuple(r.grid_x, r.grid_y);
        d["warps"] = r.warps;
        d["words_per_warp"] = r.words_per_warp;
        d["head_words"] = r.head_words;
        d["max_pairs"] = r.max_pairs;
        d["data"] = nb::bytes(reinterpret_cast<const char*>(r.words.data()), r.words.size() * 8);
        return d;
#else
        throw_no_cuda_backend("cuda_quantized_matmul_bulk_trace");
#endif
      },
      "Measurement only: the record of the last traced bulk-kernel launch (grid, warps, "
      "words_per_warp, head_words, max_pairs, and data: little-endian uint64 words "
      "[grid y][grid x][warp][word]; layout in csrc/cuda/quantized_matmul.cu), cleared after "
      "reading. Synchronizes the device. CUDA builds only.");
  m.def(
      "plan_cuda_flash_attention",
      [](int B, int Hq, int Hkv, int qL, int kL, int D, const std::string& dtype,
         const std::string& mask, int num_sms, bool blocks, bool wgmma,
         const std::string& prefill, double dram_gbs) {
        namespace cu = mlx_kernels::cuda;
        if (dtype != "float32" && dtype != "float16" && dtype != "bfloat16") {
          throw mlx_kernels::ValueError(
              "plan_cuda_flash_attention: dtype must be float32, float16 or bfloat16.");
        }
        // prefill: "env" (what MLX_KERNELS_ATTN_PREFILL says, as the op), "auto"
        // or "mma"; wgmma: whether the build and device run the sm_90a kernel.
        cu::PrefillChoice choice = cu::prefill_choice_from_env();
        if (prefill == "auto") {
          choice = cu::PrefillChoice::Auto;
        } else if (prefill == "mma") {
          choice = cu::PrefillChoice::Mma;
        } else if (prefill != "env") {
          throw mlx_kernels::ValueError(
              "plan_cuda_flash_attention: prefill must be 'env', 'auto' or 'mma'.");
        }
        const mlx_kernels::AttnMask kind = mask_kind(mask);
        mlx_kernels::AttnParams p{B, Hq, Hkv, qL, kL, D, 1.0f, kind};
        const cu::AttnPlan plan =
            cu::plan_cuda_flash_attention(p, dtype == "float32", {num_sms, dram_gbs, wgmma}, choice);
        const cu::AttnGeometry& g = plan.geo;
        nb::dict d;
        d["kernel"] = cu::attn_kernel_name(plan.kernel);
        d["grid"] = plan.grid;
        d["block"] = plan.block;
        d["block_q"] = g.block_q;
        d["block_k"] = plan.block_k;
        d["q_tiles"] = g.q_tiles;
        d["rows"] = g.rows;
        d["block_rows"] = g.block_rows;
        d["row_tiles"] = g.row_tiles;
        d["splits"] = g.splits;
        d["chunk"] = g.chunk;
        d["smem_bytes"] = plan.smem_bytes;
        d["merge_grid"] = plan.merge_grid;
        d["merge_block"] = plan.merge_block;
        d["merge_wide"] = plan.merge_wide;
        d["blocks_per_sm"] = plan.blocks_per_sm;
        d["wave_blocks_per_sm"] = plan.wave_blocks_per_sm;
        d["min_split_keys"] = plan.min_split_keys;
        d["wave_efficiency"] = plan.wave_efficiency;
        if (blocks) {
          // Per block of the main kernel: (b, kv_head, k_begin, k_end, [(hq, query), ...]).
          nb::list work;
          for (const auto& w : cu::attn_block_work(plan)) {
            work.append(nb::make_tuple(w.b, w.hkv, w.k_begin, w.k_end, w.rows));
          }
          d["blocks"] = work;
        }
        return d;
      },
      "B"_a, "Hq"_a, "Hkv"_a, "qL"_a, "kL"_a, "D"_a, "dtype"_a, "mask"_a,
      "num_sms"_a = 132, "blocks"_a = false, "wgmma"_a = true, "prefill"_a = "env",
      "dram_gbs"_a = 3352.0);
}
