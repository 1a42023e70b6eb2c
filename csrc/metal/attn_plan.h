// The Metal launch plan of flash_attention: from the problem shape to the
// kernel variant, its tiles, grid and threadgroup, and (decode) the number of
// key splits. Plain C++ (no Metal), so that it is unit-tested on Linux and the
// simulator runs exactly what a Mac runs. Kernels: metal/flash_attention.metal.
#pragma once

#include <string>

#include "flash_attention_params.h"
#include "metal/encoder.h"

namespace mlx_kernels::metal {

enum class AttnKernel {
  Prefill, // 32 queries of one head per threadgroup, simdgroup_matrix tiles
  Decode, // the heads of a GQA group share a threadgroup; keys split
};

struct AttnPlan {
  AttnKernel kernel;
  std::string name; // [[host_name]] of the main kernel
  Dim3 grid; // threadgroups
  Dim3 threadgroup; // threads per threadgroup
  int block_q; // prefill: queries per threadgroup (32)
  int block_k; // prefill: keys per tile (by D)
  int rows; // decode: (head, query) rows per threadgroup (1, 2, 4 or 8)
  int row_tiles; // decode: ceil(G * qL / rows)
  int splits; // decode: key ranges (1: no merge pass)
  int chunk; // decode: keys per split (a multiple of 128)
  size_t threadgroup_memory; // bytes the kernel declares (for reports, checks)
  // decode with splits > 1: the merge pass
  std::string merge_name;
  Dim3 merge_grid;
  Dim3 merge_threadgroup;
};

// Queries per head up to which the decode kernel serves a problem.
constexpr int kDecodeMaxQueries = 8;
// Decode: split the keys until about this many threadgroups exist (an Apple
// GPU has 8 to 80 cores, several threadgroups each), but keep at least
// kMinSplitKeys keys per split so the merge stays cheap. Not yet measured on
// Apple hardware: measure and move them there.
constexpr int kDecodeTargetThreadgroups = 128;
constexpr int kMinSplitKeys = 256;
constexpr int kMaxSplits = 64;

// dtype: "float32", "float16" or "bfloat16". D in {64, 80, 96, 128, 256}.
AttnPlan plan_flash_attention(const AttnParams& p, const std::string& dtype);

const char* attn_kernel_name(AttnKernel k);

// Keys per prefill tile for head dimension D (threadgroup memory <= 32 KB).
int prefill_block_k(int D);

} // namespace mlx_kernels::metal
