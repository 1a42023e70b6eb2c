// The launch plan of the CUDA flash_attention: plain C++ (no CUDA headers), so
// it is unit-tested on any machine (tests/test_cuda_attn_plan.py).
// flash_attention.cu runs exactly what plan_cuda_flash_attention returns.
//
// Each kernel finds its work from blockIdx.x through decode_work or
// prefill_work below: the same inline functions the tests enumerate
// (attn_block_work), so the tested coverage is the kernels' coverage.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "flash_attention_params.h"

#if defined(__CUDACC__)
#define MLXK_HOST_DEVICE __host__ __device__
#else
#define MLXK_HOST_DEVICE
#endif

namespace mlx_kernels::cuda {

enum class AttnKernel {
  None, // empty output: nothing to launch
  Decode, // qL <= 8, float32: the rows of a GQA group share a block; keys split
  DecodeMma, // qL <= 8, float16/bfloat16: as Decode, 16-64 rows a block, tensor cores
  PrefillMma, // qL > 8, float16/bfloat16: tensor-core tiles (mma.sync)
  PrefillWgmma, // qL > 8, float16/bfloat16, D 64 / 128, no array mask: sm_90a wgmma + TMA
  PrefillSimt, // qL > 8, float32: float32 FMA tiles
};

const char* attn_kernel_name(AttnKernel k);

// The problem and the plan's choices the kernels read: plain ints, passed by
// value inside the kernels' argument struct.
struct AttnGeometry {
  int B, Hq, Hkv, qL, kL, D;
  int group; // Hq / Hkv
  int mask; // AttnMask
  // Decode. Row r in [0, rows) of a KV head is query head hkv * group + r / qL
  // and query r % qL; a block serves block_rows consecutive rows over one
  // split of the keys [split * chunk, min(kL, (split + 1) * chunk)).
  int rows; // group * qL
  int block_rows; // Decode: 1, 2, 4 or 8; DecodeMma: 16, 32 or 64
  int row_tiles; // ceil(rows / block_rows)
  int splits; // >= 1; every split holds at least one key (when kL > 0)
  int chunk; // keys per split
  // Prefill: a block serves block_q consecutive queries of one query head.
  int block_q;
  int q_tiles; // ceil(qL / block_q)
};

MLXK_HOST_DEVICE inline int attn_min(int a, int b) {
  return a < b ? a : b;
}

struct DecodeWork {
  int b, hkv, split;
  int row0; // first row of the block (rows past `rows` are idle)
  int k_begin, k_end; // the split's keys
};

// Block order: row tiles fastest, then splits, KV heads, batch (blocks that
// read the same keys run close together).
MLXK_HOST_DEVICE inline DecodeWork decode_work(const AttnGeometry& g, int64_t block) {
  DecodeWork w;
  w.row0 = static_cast<int>(block % g.row_tiles) * g.block_rows;
  block /= g.row_tiles;
  w.split = static_cast<int>(block % g.splits);
  block /= g.splits;
  w.hkv = static_cast<int>(block % g.Hkv);
  w.b = static_cast<int>(block / g.Hkv);
  w.k_begin = attn_min(g.kL, w.split * g.chunk);
  w.k_end = attn_min(g.kL, w.k_begin + g.chunk);
  return w;
}

MLXK_HOST_DEVICE inline int decode_row_head(const AttnGeometry& g, int hkv, int row) {
  return hkv * g.group + row / g.qL;
}

MLXK_HOST_DEVICE inline int decode_row_query(const AttnGeometry& g, int row) {
  return row % g.qL;
}

// Row `row` of block w as a row of q and out, [B * Hq * qL].
MLXK_HOST_DEVICE inline int64_t decode_global_row(const AttnGeometry& g, const DecodeWork& w, int row) {
  return (int64_t(w.b) * g.Hq + decode_row_head(g, w.hkv, row)) * g.qL + decode_row_query(g, row);
}

struct PrefillWork {
  int b, hq;
  int q0; // first query of the block
  int k_end; // keys [0, k_end) to visit
};

// Keys a prefill block starting at query q0 visits: all of them, except under
// a causal mask, up to the last key its last query sees. A block whose first
// query sees no key at all (qL > kL) visits every key: such a row's masked
// scores all tie at the lowest float, so it averages every v.
MLXK_HOST_DEVICE inline int prefill_key_end(const AttnGeometry& g, int q0) {
  if (g.mask != static_cast<int>(AttnMask::Causal) || q0 + g.kL - g.qL < 0) {
    return g.kL;
  }
  const int last = attn_min(q0 + g.block_q, g.qL) - 1;
  return attn_min(g.kL, last + g.kL - g.qL + 1);
}

// Block order: query heads fastest, then batch, then the query tiles, last
// first: under a causal mask the blocks with the most key tiles (the last
// query tiles of every head) launch first and the short ones fill the tail.
MLXK_HOST_DEVICE inline PrefillWork prefill_work(const AttnGeometry& g, int64_t block) {
  PrefillWork w;
  const int64_t heads = int64_t(g.B) * g.Hq;
  const int tile = g.q_tiles - 1 - static_cast<int>(block / heads);
  block %= heads;
  w.hq = static_cast<int>(block % g.Hq);
  w.b = static_cast<int>(block / g.Hq);
  w.q0 = tile * g.block_q;
  w.k_end = prefill_key_end(g, w.q0);
  return w;
}

struct AttnPlan {
  AttnKernel kernel = AttnKernel::None;
  AttnGeometry geo{};
  int64_t grid = 0; // blocks (grid.x)
  int block = 0; // threads per block
  int block_k = 0; // prefill: keys per staged tile
  size_t smem_bytes = 0; // PrefillMma: dynamic; the others: their static arrays
  // Decode with splits > 1: the merge pass, one block per output row;
  // merge_wide: by attn_merge_wide_kernel (8 warps a row) rather than
  // attn_merge_kernel (4); the rule: use_merge_wide in attn_plan.cpp.
  int64_t merge_grid = 0;
  int merge_block = 0;
  bool merge_wide = false;
  // Decode: blocks of the main kernel resident per SM (from shared memory and
  // threads; registers not counted); the blocks an SM that the split rule
  // counts as one wave (decode_wave_blocks_per_sm); and the wave efficiency
  // of the grid, grid / (ceil(grid / capacity) * capacity), capacity =
  // wave_blocks_per_sm * SMs.
  int blocks_per_sm = 0;
  int wave_blocks_per_sm = 0;
  int min_split_keys = 0; // decode_min_split_keys
  double wave_efficiency = 0.0;
};

constexpr int kAttnThreads = 128; // 4 warps, every kernel but the next
constexpr int kMergeWideWarps = 8; // attn_merge_wide_kernel
// The wide merge where a row has at least kMergeWideMinSplits splits and there
// are at most kMergeWideMaxRowsPerSm rows an SM (use_merge_wide).
constexpr int kMergeWideMinSplits = 8;
constexpr int kMergeWideMaxRowsPerSm = 2;
constexpr int kDecodeMaxQueries = 8;
constexpr int kDecodeWarps = 4;
// DecodeMma: 16 * MT rows a block (MT = 1, 2 or 4 row tiles of 16; the 4 warps
// are MT row tiles x 4 / MT key groups), key tiles of kDecodeMmaBlockK keys
// (double-buffered K and V in dynamic shared memory).
constexpr int kDecodeMmaMaxRows = 64;
constexpr int kDecodeMmaBlockK = 64;
constexpr int kDecodeMmaStages = 2;
// PrefillMma: 4 warps x 32 rows (128 queries) a block for D <= 128, 4 x 16
// (64) for D = 256 (prefill_mma_block_q); K and V tiles double-buffered.
constexpr int kPrefillMmaStages = 2;
constexpr int kPrefillSimtBlockQ = 32; // 32 rows x 4 lanes
// PrefillWgmma (attn_wgmma.cuh): 3 warpgroups (a TMA producer, two consumers
// of 64 query rows each), 128 queries a block, key tiles of 128, K and V in
// kPrefillWgmmaStages stages.
constexpr int kPrefillWgmmaThreads = 384;
constexpr int kPrefillWgmmaBlockQ = 128;
constexpr int kPrefillWgmmaBlockK = 128;
constexpr int kPrefillWgmmaStages = 2;
// Decode key splits (attn_plan.cpp): the fewest splits whose grid fills whole
// waves (wave efficiency >= kDecodeMinWaveEfficiency), at least
// decode_min_split_keys keys per split (the partials stay small next to the
// keys read) and at most kMaxSplits; chunks are multiples of
// kSplitKeyMultiple keys. A wave is decode_wave_blocks_per_sm blocks an SM.
// Tensor-core decode: kDecodeMmaWaveBlocksPerSm blocks an SM, at least
// kDecodeMmaMinSplitKeys keys a split; float32 decode: the residency, at
// least kDecodeMinSplitKeys (not re-measured since session 5). Residency per SM
// from the block's shared memory (kSmemPerSm usable, plus
// kSmemReservedPerBlock per block) and its kAttnThreads threads.
constexpr double kDecodeMinWaveEfficiency = 0.9;
constexpr size_t kSmemPerSm = 227 * 1024;
constexpr size_t kSmemReservedPerBlock = 1024;
constexpr int kMaxThreadsPerSm = 2048;
constexpr int kMaxBlocksPerSm = 32;
constexpr int kDecodeMinSplitKeys = 256;
constexpr int kDecodeMmaMinSplitKeys = 128;
constexpr int kMaxSplits = 256;
constexpr int kSplitKeyMultiple = 64;
// The tensor-core decode's wave (decode_wave_blocks_per_sm): one block an
// SM; with MLX_KERNELS_ATTN_CARD_WAVE=1 (card_wave_blocks_per_sm, a
// candidate, off by default), for blocks of at least kDecodeMmaWideBlockRows
// rows as many as it takes to draw the card's peak DRAM bandwidth, one such
// block streaming about kDecodeMmaWideBlockGbsPerSm GB/s an SM (32-row blocks, qL = 8 at 4 query
// heads a KV head: 3.07 TB/s on the H200's 132 SMs, session 25; about the
// H100's 3.0 TB/s copy bandwidth there, session 20).
// The plan keeps the card-aware wave only where its splits hold at least
// kCardWaveMinChunkKeys keys, else takes the one-block wave's plan (H200,
// session 17's residency wave against session 25's one block, qL = 8: the
// wider wave took 0.77-0.93x the time where its splits held 1k keys (B 16 at
// kL 4k-32k, B 4 at 8k-32k, B 1 at 32k; B 16 at 2k 1.04x) and 1.01-1.51x
// with 128-512 keys a split (kL 1k-4k, B 1 at 8k-16k); two builds apart,
// so the A/B on one build decides).
constexpr int kDecodeMmaWaveBlocksPerSm = 1;
constexpr int kDecodeMmaWideBlockRows = 32;
constexpr double kDecodeMmaWideBlockGbsPerSm = 23.3;
constexpr int kCardWaveMinChunkKeys = 1024;

// Queries a block and keys per staged tile of the prefill kernels for head
// dimension D.
int prefill_mma_block_q(int D);
int prefill_mma_block_k(int D);
// Dynamic shared memory of the PrefillMma kernel.
size_t prefill_mma_smem_bytes(int D);
int prefill_simt_block_k(int D);
// Dynamic shared memory of the PrefillWgmma kernel (1 KB of it is slack to
// round the base up to the 1024-byte alignment of the 128-byte swizzle).
size_t prefill_wgmma_smem_bytes(int D);
// Head dimensions the PrefillWgmma kernel is compiled for.
bool prefill_wgmma_head_dim(int D);
// How the prefill kernel of float16 / bfloat16 is chosen:
// MLX_KERNELS_ATTN_PREFILL=mma forces PrefillMma (A/B on one build); unset or
// anything else: PrefillWgmma where it applies. Read once.
enum class PrefillChoice { Auto, Mma };
PrefillChoice prefill_choice_from_env();
// MLX_KERNELS_ATTN_MERGE_WIDE (A/B runs; read once): 1 every split decode's
// merge by attn_merge_wide_kernel, 0 none; unset or else: the plan's rule.
enum class MergeChoice { Auto, Wide, Narrow };
MergeChoice merge_choice_from_env();
// The plan's rule for a split decode's merge pass (merge_grid rows, splits
// each) on num_sms SMs.
bool use_merge_wide(int64_t merge_rows, int splits, int num_sms, MergeChoice choice);
// Dynamic shared memory of the DecodeMma kernel.
size_t decode_mma_smem_bytes(int block_rows, int D);
// Blocks of kAttnThreads threads and smem_bytes of shared memory each that fit
// one SM at once (>= 1), registers not counted.
int resident_blocks_per_sm(size_t smem_bytes);
// The GPU a plan is made for: its SMs, its peak DRAM bandwidth in GB/s (memory
// clock x bus width, flash_attention.h: peak_dram_gbs) and whether the build holds the
// sm_90a body of PrefillWgmma and the device runs it (flash_attention.cu:
// wgmma_prefill_available).
struct AttnDevice {
  int num_sms = 0;
  double dram_gbs = 0.0;
  bool has_wgmma = false;
};
// The blocks an SM that the decode split rule counts as one wave: the
// MLX_KERNELS_ATTN_SPLIT_BLOCKS_PER_SM knob where set (0: the residency),
// else kDecodeMmaWaveBlocksPerSm for the tensor-core decode and the residency
// for the float32 one.
int decode_wave_blocks_per_sm(bool is_float32, int residency);
// The card-aware wave (a candidate, MLX_KERNELS_ATTN_CARD_WAVE=1, no
// MLX_KERNELS_ATTN_SPLIT_BLOCKS_PER_SM): for the tensor-core decode with
// block_rows >= kDecodeMmaWideBlockRows, round(dram_gbs /
// (kDecodeMmaWideBlockGbsPerSm * num_sms)) blocks an SM within [1, residency]
// (H100 SXM, 3.35 TB/s: 1; H200, 4.9 TB/s: 2); 0 where it does not apply.
// plan_cuda_flash_attention takes it over decode_wave_blocks_per_sm only
// where its splits hold at least kCardWaveMinChunkKeys keys.
int card_wave_blocks_per_sm(
    bool is_float32, int residency, int block_rows, const AttnDevice& dev);
// The fewest keys a decode split takes: the MLX_KERNELS_ATTN_MIN_SPLIT_KEYS
// knob where set, else kDecodeMmaMinSplitKeys (tensor cores) or
// kDecodeMinSplitKeys (float32).
int decode_min_split_keys(bool is_float32);

// is_float32: q, k and v are float32 (else float16 or bfloat16). choice:
// normally prefill_choice_from_env(). Throws ValueError for a D it has no
// kernel for or a grid past 2^31 - 1 blocks.
AttnPlan plan_cuda_flash_attention(
    const AttnParams& p, bool is_float32, const AttnDevice& dev,
    PrefillChoice choice = prefill_choice_from_env());

// What block `i` of the main kernel computes (tests): batch, KV head, the
// keys [k_begin, k_end) it visits and its (query head, query) rows.
struct AttnBlockWork {
  int b, hkv, k_begin, k_end;
  std::vector<std::pair<int, int>> rows;
};
std::vector<AttnBlockWork> attn_block_work(const AttnPlan& plan);

} // namespace mlx_kernels::cuda
