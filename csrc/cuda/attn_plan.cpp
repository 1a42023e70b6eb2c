// The one launch plan of the CUDA flash_attention (see attn_plan.h and the
// kernels' header in flash_attention.cu).
//
// Sizes and the reasoning behind them. Measured on the H200 (session 5,
// benchmarks/results/qmm_h200_notes.md runs 5 and 10): the wave-aware decode
// splits against the earlier rule, 2.37x against 2.10x MLX's kernel time
// (geomean over 54 float16 cases) and 70.8% against 53.6% of copy bandwidth at
// worst where B * kL >= 64k; the 128-query prefill blocks, 126-301 TFLOP/s
// against 103-198 for the 64-query ones.
// - Decode key splits are wave-aware. The blocks resident on one SM at once
//   come from the block's shared memory (kSmemPerSm = 227 KB usable per SM,
//   kSmemReservedPerBlock = 1 KB more per block) and its 128 threads (at most
//   2048 threads and 32 blocks an SM); registers are not counted (DecodeMma
//   declares __launch_bounds__(128, 2), so at least 2 fit). DecodeMma, D = 128:
//   16 rows a block (72 KB) -> 3 blocks an SM, 32 or 64 rows -> 2. The rule
//   counts capacity = wave_blocks_per_sm * num_sms blocks as one wave:
//   the residency for the float32 decode; ONE block an SM for DecodeMma
//   (H100, session 20: one block an SM already streams K and V at 84-87% of
//   copy bandwidth, and the residency's 2-3x the splits only added partials
//   and merge work: 0.75-1.02x the time, see the knobs below). A candidate,
//   off unless MLX_KERNELS_ATTN_CARD_WAVE=1 (session 26; on the H100 in
//   session 27 it is 1, the defaults' plans; not yet run on the H200):
//   blocks of 32 rows or more count as many as it takes to draw the
//   card's peak DRAM bandwidth at ~23.3 GB/s an SM each (H200, session 25:
//   one 32-row block an SM streamed 3.07 TB/s, 64-73% of the 4.2 TB/s copy
//   bandwidth at qL = 8; card_wave_blocks_per_sm: 2 on the H200, 1 on the
//   H100 SXM), kept where the splits that follow hold at least
//   kCardWaveMinChunkKeys keys. A grid of n blocks
//   runs in ceil(n / capacity) waves with wave efficiency n / (ceil(n /
//   capacity) * capacity) (the last wave's idle slots are lost time, all
//   blocks of a decode being about equally long). With base = B * Hkv * row_tiles blocks
//   before splitting, the plan takes the SMALLEST split count s in
//   [1, s_max], s_max = min(kMaxSplits, max(kL / min_split_keys, 1)), whose
//   grid base * s reaches kDecodeMinWaveEfficiency (0.9): at least ~one full
//   wave, and no more splits than that (each split costs a partial output per
//   row and the merge pass). If none does (short kL: fewer blocks than one
//   wave even at s_max), the s of the highest efficiency, i.e. the most
//   blocks. Efficiencies are those of the grid actually launched (chunks are
//   rounded up to kSplitKeyMultiple keys, which may merge the last splits).
//   The first rule (grid >= 8 blocks per SM regardless of residency) gave
//   e.g. B 16, qL 1, kL 2048: 8 splits, 1024 blocks = 2.6 waves of 396; the
//   residency wave 3 splits, 384 blocks, one wave at 97%; now 1 split, 128
//   blocks (97% of a 132-block wave), no merge.
// - Decode (float16/bfloat16) serves 16, 32 or 64 rows a block on tensor
//   cores (every K / V row read once per KV head and split for up to 64
//   rows): dynamic shared memory Q [rows][D + 8] + 2 stages x K, V
//   [64][D + 8]: D = 128: 74-87 KB (2-3 blocks an SM), D = 256: 143-169 KB.
// - Prefill (float16/bfloat16): 128 queries a block for D <= 128 (each warp
//   32 rows: every K / V fragment read from shared memory feeds two 16-row
//   MMAs; D float32 accumulators a thread), 64 for D = 256 (16 rows a warp);
//   key tiles of 64 for D = 64, 32 otherwise (the S accumulators of 64 keys
//   on top of D accumulators spill at D >= 96: ptxas, sm_90). Q and two
//   stages of K and V in dynamic shared memory, (block_q + 4 * block_k) *
//   (D + 8) * 2 bytes: D = 64: 54 KB, D = 128: 68 KB, D = 256: 99 KB
//   (registers, 186-239 a thread, allow two blocks an SM).
// - Prefill (float32): 32 queries x 32 keys (16 for D = 256); K and V tiles
//   2 * block_k * D * 4 bytes <= 32 KB, static.
#include "cuda/attn_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>

#include "cuda/plan_knobs.h"
#include "errors.h"

namespace mlx_kernels::cuda {

namespace {

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

bool supported_head_dim(int D) {
  return D == 64 || D == 80 || D == 96 || D == 128 || D == 256;
}

// Static shared memory of the decode kernel: the block's query rows, the
// warps' accumulators, maxima and sums (flash_attention.cu).
size_t decode_smem_bytes(int block_rows, int D) {
  return sizeof(float) *
      (size_t(block_rows) * D * (1 + kDecodeWarps) + 2 * kDecodeWarps * size_t(block_rows));
}

double wave_efficiency(int64_t grid, int64_t capacity) {
  if (grid <= 0 || capacity <= 0) {
    return 0.0;
  }
  return double(grid) / double(ceil_div(grid, capacity) * capacity);
}

// Keys per split and the splits that result when kL keys are cut into
// `requested` splits of a multiple of kSplitKeyMultiple keys each.
std::pair<int, int> decode_chunks(int kL, int64_t requested) {
  const int64_t chunk =
      ceil_div(ceil_div(std::max(kL, 1), requested), kSplitKeyMultiple) * kSplitKeyMultiple;
  const int64_t splits = std::max<int64_t>(ceil_div(kL, chunk), 1);
  return {static_cast<int>(chunk), static_cast<int>(splits)};
}

// The decode's (keys a split, splits) for a grid of base blocks a split and
// capacity blocks a wave: the smallest split count up to max_splits whose
// grid reaches the wave efficiency goal, else the most efficient one (the
// smallest of equals).
std::pair<int, int> decode_splits(int kL, int64_t base, int64_t capacity, int64_t max_splits) {
  std::pair<int, int> best = decode_chunks(kL, 1);
  double best_eff = wave_efficiency(base * best.second, capacity);
  for (int64_t s = 2; s <= max_splits && best_eff < kDecodeMinWaveEfficiency; ++s) {
    const std::pair<int, int> c = decode_chunks(kL, s);
    const double eff = wave_efficiency(base * c.second, capacity);
    if (eff > best_eff) {
      best = c;
      best_eff = eff;
    }
  }
  return best;
}

// A/B knobs of the decode split rule (read once; unset: the rule above).
// - MLX_KERNELS_ATTN_SPLIT_BLOCKS_PER_SM: the blocks an SM that the rule
//   counts as one wave (decode_wave_blocks_per_sm); 0: the residency from
//   shared memory, the rule before session 20. The plan's blocks_per_sm stays
//   the residency.
// - MLX_KERNELS_ATTN_MIN_SPLIT_KEYS: the fewest keys a split
//   (decode_min_split_keys).
// Session 20 (H100, ncu, 54 float16 + 54 bfloat16 decode cases; notes:
// attention_h200_notes.md): a wave of 1 block an SM against the residency
// (2-3) took 0.75-1.02x the time, geomean 0.93 (B = 16 with 2-3 splits -> 1:
// 0.75-0.95x; B = 1, kL 16k-32k, 43-47 -> 15 splits: 0.88-0.93x); 2 an SM
// was in between (0.99). Fewer, longer splits at kL = 1k (MIN_SPLIT_KEYS 512
// or 1024: 4 -> 2 or 1 splits) were 1.13-1.67x slower there; more, shorter
// ones (128 keys where the grid is below a wave: B = 1, kL 1k-2k, 4-8 -> 8-16
// splits) 0.86-0.94x on those 6 cases, 0.99 over the 54 (64 keys: the same),
// so the tensor-core decode takes 128.
const int64_t kSplitBlocksPerSmKnob =
    knob_in("MLX_KERNELS_ATTN_SPLIT_BLOCKS_PER_SM", 0, kMaxBlocksPerSm, -1);
// - MLX_KERNELS_ATTN_CARD_WAVE=1: the card-aware wave for blocks of 32 rows
//   or more (card_wave_blocks_per_sm; a candidate, off by default until its
//   A/B on the H200, attention_h200_notes.md "Session 26").
const bool kCardWaveKnob = knob_in("MLX_KERNELS_ATTN_CARD_WAVE", 0, 1, 0) == 1;
const int64_t kMinSplitKeysKnob =
    knob_in("MLX_KERNELS_ATTN_MIN_SPLIT_KEYS", kSplitKeyMultiple, int64_t{1} << 20, 0);

} // namespace

int resident_blocks_per_sm(size_t smem_bytes) {
  const int64_t by_smem = int64_t(kSmemPerSm / (smem_bytes + kSmemReservedPerBlock));
  const int64_t by_threads = kMaxThreadsPerSm / kAttnThreads;
  return static_cast<int>(
      std::max<int64_t>(1, std::min({by_smem, by_threads, int64_t(kMaxBlocksPerSm)})));
}

int decode_wave_blocks_per_sm(bool is_float32, int residency) {
  if (kSplitBlocksPerSmKnob >= 0) {
    return kSplitBlocksPerSmKnob == 0 ? residency : static_cast<int>(kSplitBlocksPerSmKnob);
  }
  return is_float32 ? residency : kDecodeMmaWaveBlocksPerSm;
}

int card_wave_blocks_per_sm(
    bool is_float32, int residency, int block_rows, const AttnDevice& dev) {
  if (!kCardWaveKnob || kSplitBlocksPerSmKnob >= 0 || is_float32 ||
      block_rows < kDecodeMmaWideBlockRows) {
    return 0;
  }
  const double one_block_an_sm_gbs = kDecodeMmaWideBlockGbsPerSm * std::max(dev.num_sms, 1);
  const long blocks = std::lround(dev.dram_gbs / one_block_an_sm_gbs);
  return static_cast<int>(std::clamp<long>(blocks, kDecodeMmaWaveBlocksPerSm, std::max(residency, 1)));
}

int decode_min_split_keys(bool is_float32) {
  if (kMinSplitKeysKnob > 0) {
    return static_cast<int>(kMinSplitKeysKnob);
  }
  return is_float32 ? kDecodeMinSplitKeys : kDecodeMmaMinSplitKeys;
}

size_t decode_mma_smem_bytes(int block_rows, int D) {
  // Q [block_rows][D + 8] and kDecodeMmaStages x (K, V) [BK][D + 8], 2-byte
  // elements. The final combine ([4 warps][16][D + 2] floats, then per block
  // row its groups' weights, max, sum and output row) reuses the K / V stages;
  // the kernel's static_assert checks that it fits.
  return 2 * (size_t(block_rows) + 2 * size_t(kDecodeMmaStages) * kDecodeMmaBlockK) * (D + 8);
}

const char* attn_kernel_name(AttnKernel k) {
  switch (k) {
    case AttnKernel::None: return "none";
    case AttnKernel::Decode: return "decode";
    case AttnKernel::DecodeMma: return "decode_mma";
    case AttnKernel::PrefillMma: return "prefill_mma";
    case AttnKernel::PrefillWgmma: return "prefill_wgmma";
    case AttnKernel::PrefillSimt: return "prefill_simt";
  }
  return "?";
}

int prefill_mma_block_q(int D) {
  return D <= 128 ? 128 : 64;
}

int prefill_mma_block_k(int D) {
  return D == 64 ? 64 : 32;
}

size_t prefill_mma_smem_bytes(int D) {
  // Q [block_q][D + 8] and kPrefillMmaStages x (K, V) [block_k][D + 8],
  // 2-byte elements.
  return 2 * size_t(prefill_mma_block_q(D) + 2 * kPrefillMmaStages * prefill_mma_block_k(D)) *
      (D + 8);
}

int prefill_simt_block_k(int D) {
  return D <= 128 ? 32 : 16;
}

bool prefill_wgmma_head_dim(int D) {
  return D == 64 || D == 128;
}

size_t prefill_wgmma_smem_bytes(int D) {
  // 1 KB alignment slack, Q [128][D] and kPrefillWgmmaStages x (K, V)
  // [128][D], 2-byte elements (the mbarriers are static shared memory).
  return 1024 + 2 * size_t(D) *
      (kPrefillWgmmaBlockQ + 2 * size_t(kPrefillWgmmaStages) * kPrefillWgmmaBlockK);
}

PrefillChoice prefill_choice_from_env() {
  static const PrefillChoice choice = [] {
    const char* v = std::getenv("MLX_KERNELS_ATTN_PREFILL");
    return v != nullptr && std::strcmp(v, "mma") == 0 ? PrefillChoice::Mma : PrefillChoice::Auto;
  }();
  return choice;
}

MergeChoice merge_choice_from_env() {
  static const MergeChoice choice = [] {
    const char* v = std::getenv("MLX_KERNELS_ATTN_MERGE_WIDE");
    if (v != nullptr && std::strcmp(v, "1") == 0) {
      return MergeChoice::Wide;
    }
    return v != nullptr && std::strcmp(v, "0") == 0 ? MergeChoice::Narrow : MergeChoice::Auto;
  }();
  return choice;
}

// attn_merge_wide_kernel gathers a row's splits with 8 warps in batches
// (fewer dependent rounds of loads); it pays where a row has many splits and
// the grid is small, so that the 4-warp kernel's rounds are the latency.
// H100, ncu, session 19, the decode grid (Hq 32, Hkv 8, D 128, float16), wide
// over 4-warp merge time: 8-47 splits and 32-256 rows (up to 2 an SM):
// 0.47-1.00x on all 20 cases, geomean 0.72 (B = 1, qL = 1, kL 16k-32k, 43-47
// splits: 8.0-8.6 -> 3.8-4.0 us); 8-12 splits at 512-1024 rows: 1.05-1.55x
// (10 cases); 2-4 splits: 0.97-1.65x (24).
bool use_merge_wide(int64_t merge_rows, int splits, int num_sms, MergeChoice choice) {
  if (choice != MergeChoice::Auto) {
    return choice == MergeChoice::Wide;
  }
  return splits >= kMergeWideMinSplits &&
      merge_rows <= int64_t{kMergeWideMaxRowsPerSm} * std::max(num_sms, 1);
}

AttnPlan plan_cuda_flash_attention(
    const AttnParams& p, bool is_float32, const AttnDevice& dev, PrefillChoice choice) {
  const int num_sms = dev.num_sms;
  if (!supported_head_dim(p.D)) {
    throw ValueError(concat(
        "flash_attention (CUDA): no kernel for head dimension ", p.D, "."));
  }
  AttnPlan plan;
  AttnGeometry& g = plan.geo;
  g.B = p.B;
  g.Hq = p.Hq;
  g.Hkv = p.Hkv;
  g.qL = p.qL;
  g.kL = p.kL;
  g.D = p.D;
  g.group = p.Hkv > 0 ? p.Hq / p.Hkv : 0;
  g.mask = static_cast<int>(p.mask);
  if (int64_t(p.B) * p.Hq * p.qL == 0) {
    return plan; // AttnKernel::None
  }
  plan.block = kAttnThreads;

  if (p.qL <= kDecodeMaxQueries) {
    plan.kernel = is_float32 ? AttnKernel::Decode : AttnKernel::DecodeMma;
    g.rows = g.group * p.qL;
    if (is_float32) {
      g.block_rows = 1;
      while (g.block_rows < std::min(g.rows, 8)) {
        g.block_rows *= 2;
      }
    } else {
      g.block_rows = 16;
      while (g.block_rows < std::min(g.rows, kDecodeMmaMaxRows)) {
        g.block_rows *= 2;
      }
    }
    g.row_tiles = static_cast<int>(ceil_div(g.rows, g.block_rows));
    if (is_float32) {
      plan.smem_bytes = decode_smem_bytes(g.block_rows, p.D);
    } else {
      plan.block_k = kDecodeMmaBlockK;
      plan.smem_bytes = decode_mma_smem_bytes(g.block_rows, p.D);
    }
    plan.blocks_per_sm = resident_blocks_per_sm(plan.smem_bytes);
    plan.wave_blocks_per_sm = decode_wave_blocks_per_sm(is_float32, plan.blocks_per_sm);
    const int64_t base = int64_t(p.B) * p.Hkv * g.row_tiles;
    plan.min_split_keys = decode_min_split_keys(is_float32);
    const int64_t max_splits = std::clamp<int64_t>(p.kL / plan.min_split_keys, 1, kMaxSplits);
    const auto capacity = [&] { return int64_t(plan.wave_blocks_per_sm) * std::max(num_sms, 1); };
    std::pair<int, int> split = decode_splits(p.kL, base, capacity(), max_splits);
    const int card_wave = card_wave_blocks_per_sm(is_float32, plan.blocks_per_sm, g.block_rows, dev);
    if (card_wave > plan.wave_blocks_per_sm) {
      // The card-aware wave, kept where its splits hold kCardWaveMinChunkKeys keys.
      const std::pair<int, int> wide =
          decode_splits(p.kL, base, int64_t(card_wave) * std::max(num_sms, 1), max_splits);
      if (wide.first >= kCardWaveMinChunkKeys) {
        plan.wave_blocks_per_sm = card_wave;
        split = wide;
      }
    }
    g.chunk = split.first;
    g.splits = split.second;
    plan.grid = base * g.splits;
    plan.wave_efficiency = wave_efficiency(plan.grid, capacity());
    if (g.splits > 1) {
      plan.merge_grid = int64_t(p.B) * p.Hq * p.qL;
      plan.merge_wide = use_merge_wide(plan.merge_grid, g.splits, num_sms, merge_choice_from_env());
      plan.merge_block = plan.merge_wide ? 32 * kMergeWideWarps : kAttnThreads;
    }
  } else if (
      !is_float32 && dev.has_wgmma && choice == PrefillChoice::Auto &&
      prefill_wgmma_head_dim(p.D) && p.kL > 0 &&
      (p.mask == AttnMask::None || p.mask == AttnMask::Causal)) {
    plan.kernel = AttnKernel::PrefillWgmma;
    plan.block = kPrefillWgmmaThreads;
    g.block_q = kPrefillWgmmaBlockQ;
    g.q_tiles = static_cast<int>(ceil_div(p.qL, g.block_q));
    plan.grid = int64_t(g.q_tiles) * p.Hq * p.B;
    plan.block_k = kPrefillWgmmaBlockK;
    plan.smem_bytes = prefill_wgmma_smem_bytes(p.D);
  } else {
    plan.kernel = is_float32 ? AttnKernel::PrefillSimt : AttnKernel::PrefillMma;
    g.block_q = is_float32 ? kPrefillSimtBlockQ : prefill_mma_block_q(p.D);
    g.q_tiles = static_cast<int>(ceil_div(p.qL, g.block_q));
    plan.grid = int64_t(g.q_tiles) * p.Hq * p.B;
    if (is_float32) {
      plan.block_k = prefill_simt_block_k(p.D);
      plan.smem_bytes = 2 * size_t(plan.block_k) * p.D * sizeof(float);
    } else {
      plan.block_k = prefill_mma_block_k(p.D);
      plan.smem_bytes = prefill_mma_smem_bytes(p.D);
    }
  }
  if (plan.grid > std::numeric_limits<int32_t>::max() ||
      plan.merge_grid > std::numeric_limits<int32_t>::max()) {
    throw ValueError(concat(
        "flash_attention (CUDA): the problem needs ", std::max(plan.grid, plan.merge_grid),
        " blocks, more than one launch can hold (2^31 - 1)."));
  }
  return plan;
}

std::vector<AttnBlockWork> attn_block_work(const AttnPlan& plan) {
  const AttnGeometry& g = plan.geo;
  std::vector<AttnBlockWork> blocks;
  for (int64_t i = 0; i < plan.grid; ++i) {
    AttnBlockWork w{};
    if (plan.kernel == AttnKernel::Decode || plan.kernel == AttnKernel::DecodeMma) {
      const DecodeWork d = decode_work(g, i);
      w = {d.b, d.hkv, d.k_begin, d.k_end, {}};
      for (int r = d.row0; r < std::min(d.row0 + g.block_rows, g.rows); ++r) {
        w.rows.emplace_back(decode_row_head(g, d.hkv, r), decode_row_query(g, r));
      }
    } else {
      const PrefillWork pw = prefill_work(g, i);
      w = {pw.b, pw.hq / g.group, 0, pw.k_end, {}};
      for (int q = pw.q0; q < std::min(pw.q0 + g.block_q, g.qL); ++q) {
        w.rows.emplace_back(pw.hq, q);
      }
    }
    blocks.push_back(std::move(w));
  }
  return blocks;
}

} // namespace mlx_kernels::cuda
