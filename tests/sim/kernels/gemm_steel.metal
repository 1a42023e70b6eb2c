// A small steel-style GEMM: block loaders with device/threadgroup pointer members,
// simdgroup_matrix fragments held in a struct, K loop with two barriers per step.
#include "common.h"

#define STEEL_CONST static constant constexpr const
#define STEEL_PRAGMA_UNROLL _Pragma("clang loop unroll(full)")

template <typename T, short BROWS, short BCOLS, short tgp_size>
struct BlockLoader {
  STEEL_CONST short n_reads = (BCOLS * BROWS) / tgp_size;
  const int src_ld;
  const device T* src;
  threadgroup T* dst;
  const short bi, bj;

  METAL_FUNC BlockLoader(const device T* src_, int src_ld_, threadgroup T* dst_, ushort tid)
      : src_ld(src_ld_),
        src(src_ + (tid * n_reads) / BCOLS * src_ld_ + (tid * n_reads) % BCOLS),
        dst(dst_ + (tid * n_reads) / BCOLS * BCOLS + (tid * n_reads) % BCOLS),
        bi((tid * n_reads) / BCOLS),
        bj((tid * n_reads) % BCOLS) {}

  METAL_FUNC void load_unsafe() const {
    STEEL_PRAGMA_UNROLL
    for (short j = 0; j < n_reads; j++) {
      dst[j] = src[j];
    }
  }
  METAL_FUNC void next() { src += BCOLS; }
  METAL_FUNC void next_rows() { src += BROWS * src_ld; }
};

template <typename T, short BM, short BN, short BK, short WM, short WN>
struct BlockMMA {
  STEEL_CONST short TM = BM / (8 * WM);
  STEEL_CONST short TN = BN / (8 * WN);
  simdgroup_matrix<float, 8, 8> results[TM * TN];
  short sm, sn;

  METAL_FUNC BlockMMA(ushort simd_group_id) {
    sm = (simd_group_id / WN) * TM * 8;
    sn = (simd_group_id % WN) * TN * 8;
    STEEL_PRAGMA_UNROLL
    for (short i = 0; i < TM * TN; i++) results[i] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  }

  METAL_FUNC void mma(const threadgroup T* As, const threadgroup T* Bs) {
    STEEL_PRAGMA_UNROLL
    for (short kk = 0; kk < BK; kk += 8) {
      simdgroup_matrix<T, 8, 8> a[TM], b[TN];
      STEEL_PRAGMA_UNROLL
      for (short i = 0; i < TM; i++) simdgroup_load(a[i], As, BK, ulong2(kk, sm + i * 8));
      STEEL_PRAGMA_UNROLL
      for (short j = 0; j < TN; j++) simdgroup_load(b[j], Bs, BN, ulong2(sn + j * 8, kk));
      STEEL_PRAGMA_UNROLL
      for (short i = 0; i < TM; i++)
        STEEL_PRAGMA_UNROLL
        for (short j = 0; j < TN; j++) simdgroup_multiply_accumulate(results[i * TN + j], a[i], b[j], results[i * TN + j]);
    }
  }

  METAL_FUNC void store_result(device T* C, int ldc) const {
    STEEL_PRAGMA_UNROLL
    for (short i = 0; i < TM; i++)
      STEEL_PRAGMA_UNROLL
      for (short j = 0; j < TN; j++) {
        simdgroup_matrix<T, 8, 8> r;
        r.thread_elements() = vec<T, 2>(results[i * TN + j].thread_elements());
        simdgroup_store(r, C, ldc, ulong2(sn + j * 8, sm + i * 8));
      }
  }
};

template <typename T, int BM, int BN, int BK, int WM, int WN>
[[kernel, max_total_threads_per_threadgroup(WM * WN * 32)]] void gemm_nn(
    const device T* A [[buffer(0)]],
    const device T* B [[buffer(1)]],
    device T* C [[buffer(2)]],
    const constant int3& MNK [[buffer(3)]],
    uint3 tid [[threadgroup_position_in_grid]],
    uint simd_group_id [[simdgroup_index_in_threadgroup]],
    uint lid [[thread_index_in_threadgroup]]) {
  const int M = MNK.x, N = MNK.y, K = MNK.z;
  (void)M;
  threadgroup T As[BM * BK];
  threadgroup T Bs[BK * BN];
  const int c_row = tid.y * BM, c_col = tid.x * BN;
  BlockLoader<T, BM, BK, WM * WN * 32> loader_a(A + c_row * K, K, As, lid);
  BlockLoader<T, BK, BN, WM * WN * 32> loader_b(B + c_col, N, Bs, lid);
  BlockMMA<T, BM, BN, BK, WM, WN> mma_op(simd_group_id);
  for (int k = 0; k < K; k += BK) {
    threadgroup_barrier(mem_flags::mem_threadgroup);
    loader_a.load_unsafe();
    loader_b.load_unsafe();
    threadgroup_barrier(mem_flags::mem_threadgroup);
    mma_op.mma(As, Bs);
    loader_a.next();
    loader_b.next_rows();
  }
  mma_op.store_result(C + c_row * N + c_col, N);
}

instantiate_kernel("gemm_nn_float32_32x32x16", gemm_nn, float, 32, 32, 16, 2, 2)
instantiate_kernel("gemm_nn_float16_32x32x16", gemm_nn, half, 32, 32, 16, 2, 2)
instantiate_kernel("gemm_nn_bfloat16_32x32x16", gemm_nn, bfloat, 32, 32, 16, 2, 2)
