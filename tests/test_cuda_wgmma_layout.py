"""A CPU model of the shared-memory and register layouts the wgmma prefill
(csrc/cuda/attn_wgmma.cuh) relies on, checked against plain matrix products.

What is modelled (from the PTX ISA and CUTLASS's canonical GMMA layouts; the
hardware itself is not available here):
- TMA with CU_TENSOR_MAP_SWIZZLE_128B writes box row r, element x (2-byte
  elements, 64 a row) at byte base + r * 128 + 2 x, with the 16-byte chunk
  bits [4, 7) of the address XORed with bits [7, 10) (the base is 1024-aligned).
- wgmma reads a shared-memory operand through its descriptor (start address,
  LBO, SBO, 128-byte swizzle) at the canonical layout, in 2-byte elements
  (T = 8 elements = 16 bytes), then applies the same XOR on the address:
    K-major:  ((8, m), (T, 2)) : ((8T, SBO), (1, T))   (row, k) of the operand
    MN-major: ((T, 8, m), (8, k)) : ((1, T, LBO), (8T, SBO))   (mn, k)
- the m64nNk16 float32 accumulator: thread t (warp w = t / 32, g = lane / 4,
  c = lane % 4) holds d[4 i + e] = (16 w + g + 8 (e // 2), 8 i + 2 c + e % 2);
  the register A operand (16-bit): a[r] = elements (16 w + g + 8 (r % 2),
  8 (r // 2) + 2 c + {0, 1}).
The kernel's descriptor arithmetic (start offsets, LBO, SBO per operand) is
restated here exactly as the kernel computes it; a change there must change
here too."""

import numpy as np
import pytest

BQ = 128
BK = 128


def swz(addr):
    return addr ^ (((addr >> 7) & 7) << 4)


class Smem:
    """Byte-addressed shared memory holding one value per 2-byte element."""

    def __init__(self, size):
        self.v = np.full(size // 2, np.nan)

    def tma_box(self, base, block):
        """A [rows][64] box (column block of a tile) into base, SW128."""
        assert base % 1024 == 0
        rows, cols = block.shape
        assert cols == 64
        for r in range(rows):
            for x in range(64):
                a = swz(base + r * 128 + 2 * x)
                self.v[a // 2] = block[r, x]

    def read(self, addr):
        return self.v[swz(addr) // 2]


def desc_kmajor(smem, start, sbo, rows):
    """Operand [rows][16] (row = M or N, k = 16 elements) through a K-major
    SW128 descriptor (LBO unused)."""
    out = np.empty((rows, 16))
    for row in range(rows):
        i0, i1 = row % 8, row // 8
        for k in range(16):
            j0, j1 = k % 8, k // 8
            off = i0 * 64 + j0 * 1 + j1 * 8  # elements
            out[row, k] = smem.read(start + i1 * sbo + 2 * off)
    return out


def desc_mnmajor(smem, start, lbo, sbo, n):
    """Operand [16][n] (k = 16, mn = n) through an MN-major SW128 descriptor."""
    out = np.empty((16, n))
    for mn in range(n):
        a0, a1, a2 = mn % 8, (mn // 8) % 8, mn // 64
        for k in range(16):
            b0, b1 = k % 8, k // 8
            off = a0 + 8 * a1 + b0 * 64  # elements
            out[k, mn] = smem.read(start + a2 * lbo + b1 * sbo + 2 * off)
    return out


def acc_coord(t, i, e):
    w, lane = t // 32, t % 32
    g, c = lane // 4, lane % 4
    return 16 * w + g + 8 * (e // 2), 8 * i + 2 * c + e % 2


def a_coord(t, r, half):
    w, lane = t // 32, t % 32
    g, c = lane // 4, lane % 4
    return 16 * w + g + 8 * (r % 2), 8 * (r // 2) + 2 * c + half


@pytest.mark.parametrize("D", [64, 128])
def test_wgmma_operands_and_p_reuse(D):
    rng = np.random.default_rng(D)
    NCB = D // 64
    Q = rng.standard_normal((BQ, D))
    K = rng.standard_normal((BK, D))
    V = rng.standard_normal((BK, D))
    # The kernel's shared memory map (offsets from the 1024-aligned base).
    q_bytes = NCB * BQ * 128
    tile_bytes = NCB * BK * 128
    stage_bytes = 2 * tile_bytes
    st = 1  # check the second stage (non-zero stage offset)
    q_smem = 0
    k_smem = q_bytes + st * stage_bytes
    v_smem = k_smem + tile_bytes
    smem = Smem(q_bytes + 2 * stage_bytes)
    for cb in range(NCB):
        smem.tma_box(q_smem + cb * BQ * 128, Q[:, 64 * cb:64 * cb + 64])
        smem.tma_box(k_smem + cb * BK * 128, K[:, 64 * cb:64 * cb + 64])
        smem.tma_box(v_smem + cb * BK * 128, V[:, 64 * cb:64 * cb + 64])

    for cw in range(2):  # consumer warpgroup: rows 64 cw ..
        q_wg = q_smem + 64 * 128 * cw
        # S = Q K^T: D / 16 k-steps of m64n128k16, both operands K-major.
        S = np.zeros((64, BK))
        for kk in range(D // 16):
            A = desc_kmajor(smem, q_wg + (kk // 4) * BQ * 128 + 32 * (kk % 4), 1024, 64)
            B = desc_kmajor(smem, k_smem + (kk // 4) * BK * 128 + 32 * (kk % 4), 1024, BK)
            np.testing.assert_array_equal(A, Q[64 * cw:64 * cw + 64, 16 * kk:16 * kk + 16])
            np.testing.assert_array_equal(B, K[:, 16 * kk:16 * kk + 16])
            S += A @ B.T
        np.testing.assert_allclose(S, Q[64 * cw:64 * cw + 64] @ K.T, rtol=1e-12, atol=1e-9)

        # The accumulator fragments of S, per thread.
        frag = np.empty((128, BK // 2))
        for t in range(128):
            for i in range(BK // 8):
                for e in range(4):
                    r, col = acc_coord(t, i, e)
                    frag[t, 4 * i + e] = S[r, col]
        P = np.exp(S - S.max(axis=1, keepdims=True))  # p of each score (any function would do)
        # softmax_tile works on each thread's values in place: p of the score
        # the register holds, with the max of the row it belongs to.
        rowmax = S.max(axis=1)
        pfrag = np.empty_like(frag)
        for t in range(128):
            for j in range(BK // 2):
                r, _ = acc_coord(t, j // 4, j % 4)
                pfrag[t, j] = np.exp(frag[t, j] - rowmax[r])
        # pack_p: a[kk][r] = (d[8 kk + 2 r], d[8 kk + 2 r + 1]); the A map must
        # give back P's keys 16 kk .. 16 kk + 15.
        O = np.zeros((64, D))
        for kk in range(BK // 16):
            Ak = np.full((64, 16), np.nan)
            for t in range(128):
                for r in range(4):
                    for half in range(2):
                        row, col = a_coord(t, r, half)
                        Ak[row, col] = pfrag[t, 8 * kk + 2 * r + half]
            np.testing.assert_array_equal(Ak, P[:, 16 * kk:16 * kk + 16])
            # V: MN-major, LBO = one column block (BK * 128 bytes), SBO = 1024.
            Bv = desc_mnmajor(smem, v_smem + 2048 * kk, BK * 128, 1024, D)
            np.testing.assert_array_equal(Bv, V[16 * kk:16 * kk + 16, :])
            O += Ak @ Bv
        np.testing.assert_allclose(O, P @ V, rtol=1e-12, atol=1e-9)
        # Epilogue: o[4 n8 + e] -> (row, column) by the accumulator map of m64nD.
        seen = np.zeros((64, D), dtype=int)
        for t in range(128):
            for n8 in range(D // 8):
                for e in range(4):
                    r, col = acc_coord(t, n8, e)
                    seen[r, col] += 1
        assert (seen == 1).all()


def test_swizzle_is_a_permutation_of_each_1024_byte_block():
    addrs = np.arange(0, 4096, 16)
    phys = np.array([swz(int(a)) for a in addrs])
    for blk in range(4):
        sel = phys[(addrs >= 1024 * blk) & (addrs < 1024 * (blk + 1))]
        assert sorted(sel) == list(range(1024 * blk, 1024 * (blk + 1), 16))
