// The constant arguments of the attention kernels (metal/flash_attention.metal),
// shared by the shaders and the host (csrc/metal/flash_attention.cpp), so the
// layout cannot drift between them. Plain scalars only: valid Metal and C++.
#pragma once

#ifndef __METAL_VERSION__
#include <cstdint>
#endif

struct MlxkAttnArgs {
  // Strides (in elements) of the mask's view [B, Hq, qL, kL]: zero on
  // broadcast axes, so a broadcast mask is read in place.
  int64_t mask_strides[4];
  int B;
  int Hq;
  int Hkv;
  int qL;
  int kL;
  int D;
  int mask; // 0 none, 1 causal, 2 bool, 3 additive (AttnMask)
  float qscale; // scale * log2(e): scores live in the exp2 domain
  // decode only
  int splits; // key ranges per (batch, KV head, row tile)
  int chunk; // keys per split: a multiple of 128 (4 simdgroups x 32 keys)
  int row_tiles; // ceil(Hq / Hkv * qL / rows per threadgroup)
  int pad_;
};
