"""Tests of the Metal simulator (sim/): build test kernels from tests/sim/kernels/*.metal
with sim/tools/metalsim_build.py and run them through the C API with ctypes."""
import glob
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import simlib  # noqa: E402
from simlib import SimError, scalar  # noqa: E402

mb = simlib.metalsim_build
CLANG = mb.find_clang()
pytestmark = pytest.mark.skipif(CLANG is None, reason="Metal simulator needs clang++ >= 15 (none found; set MLXK_SIM_CLANG)")

KERNELS = sorted(glob.glob(os.path.join(HERE, "kernels", "*.metal")))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """one compiled runtime for the whole session"""
    return str(tmp_path_factory.mktemp("simcache"))


@pytest.fixture(scope="session")
def libpath(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("simlib") / "libtest_kernels.so"
    t = time.time()
    mb.build(KERNELS, str(out), clang=CLANG, cache_dir=cache_dir)
    print(f"build of {len(KERNELS)} kernel files: {time.time() - t:.2f}s")
    return str(out)


@pytest.fixture(scope="session")
def lib(libpath):
    return simlib.SimLib(libpath)


def build_snippet(tmp_path, src, name="snippet", cache=None):
    p = tmp_path / f"{name}.metal"
    p.write_text(textwrap.dedent(src))
    out = tmp_path / f"lib{name}.so"
    mb.build([str(p)], str(out), clang=CLANG, cache_dir=cache or str(tmp_path / "cache"))
    return simlib.SimLib(str(out))


def f16_bits_to_float(bits):
    return np.array(bits, dtype=np.uint16).view(np.float16).astype(np.float32)


def to_bf16(x):
    """float32 -> bfloat16 (round to nearest even) -> float32, in numpy."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    return (r.astype(np.uint32) << 16).view(np.float32), r.astype(np.uint16)


# ----------------------------------------------------------------------------------------
def test_kernel_names(lib):
    names = lib.names()
    for n in ["row_dot_float32", "row_dot_float16", "row_dot_bfloat16", "reverse_tg",
              "qmv_fast_float16_gs_64_b_4", "mma8_half", "semantics"]:
        assert n in names
    assert lib.has("row_dot_float32") and not lib.has("row_dot")
    assert lib.lib.mlxk_sim_kernel_buffers(b"qmv_fast_float32_gs_64_b_4").decode() == "0,1,2,3,4,5,6,7"


@pytest.mark.parametrize("name,dtype,tol", [("row_dot_float32", np.float32, 1e-4),
                                            ("row_dot_float16", np.float16, 1e-2)])
def test_simd_sum_row_dot(lib, name, dtype, tol):
    rng = np.random.default_rng(0)
    M, K = 37, 300
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    out = np.zeros(M, np.float32)
    lib.launch(name, {0: a, 1: b, 2: out, 3: scalar(K)}, (M,), (32,))
    ref = a.astype(np.float32) @ b.astype(np.float32)
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)


def test_row_dot_bfloat(lib):
    rng = np.random.default_rng(1)
    M, K = 5, 64
    af, _ = to_bf16(rng.standard_normal((M, K)).astype(np.float32))
    bf, _ = to_bf16(rng.standard_normal(K).astype(np.float32))
    a = (af.view(np.uint32) >> 16).astype(np.uint16)
    b = (bf.view(np.uint32) >> 16).astype(np.uint16)
    out = np.zeros(M, np.float32)
    lib.launch("row_dot_bfloat16", {0: a, 1: b, 2: out, 3: scalar(K)}, (M,), (32,))
    np.testing.assert_allclose(out, af @ bf, rtol=1e-5, atol=1e-5)


def test_block_sum_partial_simdgroups(lib):
    x = np.arange(1000, dtype=np.float32)
    out = np.zeros(4, np.float32)
    # 250 threads per threadgroup: 7 full simdgroups + one of 26 lanes
    lib.launch("block_sum", {0: x, 1: out, 2: scalar(1000, np.uint32)}, (4,), (250,))
    np.testing.assert_allclose(out, x.reshape(4, 250).sum(1))


def test_barrier_exchange(lib):
    x = np.arange(4 * 256, dtype=np.float32)
    y = np.zeros_like(x)
    lib.launch("reverse_tg", {0: x, 1: y}, (4,), (256,))
    np.testing.assert_array_equal(y, x.reshape(4, 256)[:, ::-1].ravel())
    y[:] = 0
    lib.launch("reverse_tg", {0: x, 1: y}, (4,), (256,), shuffle=1, seed=3, workers=2)
    np.testing.assert_array_equal(y, x.reshape(4, 256)[:, ::-1].ravel())


def test_missing_barrier_reported(lib):
    x = np.arange(256, dtype=np.float32)
    y = np.zeros_like(x)
    with pytest.raises(SimError) as e:
        lib.launch("reverse_tg_nobarrier", {0: x, 1: y}, (1,), (256,))
    assert "uninitialized threadgroup memory" in str(e.value) and "'tile'" in str(e.value)


def test_missing_barrier_race_detected(lib):
    x = np.arange(2 * 256, dtype=np.float32) + 1
    y = np.zeros_like(x)
    # the race detector reports the missing barrier deterministically, naming both threads
    with pytest.raises(SimError) as e:
        lib.launch("shift_missing_barrier", {0: x, 1: y}, (2,), (256,))
    msg = str(e.value)
    assert "data race on threadgroup memory" in msg and "'tile'" in msg
    assert "thread (32,0,0)" in msg and "thread (31,0,0)" in msg and "read since the last threadgroup_barrier" in msg


def test_missing_barrier_shuffle(lib, monkeypatch):
    monkeypatch.setenv("MLXK_SIM_RACE_CHECK", "0")  # leave it to the shuffle
    x = np.arange(2 * 256, dtype=np.float32) + 1
    ref = np.concatenate([np.append(x[1:256], 0), np.append(x[257:], 0)])
    y = np.zeros_like(x)
    # the correct kernel is right in every order
    for seed in range(3):
        lib.launch("shift_with_barrier", {0: x, 1: y}, (2,), (256,), shuffle=1, seed=seed)
        np.testing.assert_array_equal(y, ref)
    # the racy one happens to be right in deterministic (program) order ...
    lib.launch("shift_missing_barrier", {0: x, 1: y}, (2,), (256,))
    np.testing.assert_array_equal(y, ref)
    # ... but not when the resume order is shuffled
    wrong = 0
    for seed in range(1, 4):
        y[:] = 0
        lib.launch("shift_missing_barrier", {0: x, 1: y}, (2,), (256,), shuffle=1, seed=seed)
        wrong += not np.array_equal(y, ref)
    assert wrong > 0


def test_shuffle_is_deterministic_per_seed(lib, monkeypatch):
    monkeypatch.setenv("MLXK_SIM_RACE_CHECK", "0")
    x = np.arange(256, dtype=np.float32) + 1
    res = []
    for _ in range(2):
        y = np.zeros_like(x)
        lib.launch("shift_missing_barrier", {0: x, 1: y}, (1,), (256,), shuffle=1, seed=7, workers=2)
        res.append(y)
    np.testing.assert_array_equal(res[0], res[1])


def test_threadgroup_param_memory_2d(lib):
    H, W, T = 32, 64, 16
    x = np.arange(H * W, dtype=np.float32).reshape(H, W)
    y = np.zeros((W, H), np.float32)
    lib.launch("transpose_tile", {0: x, 1: y}, (W // T, H // T), (T, T), tg_mem=[T * (T + 1) * 4])
    np.testing.assert_array_equal(y, x.T)
    # too little threadgroup memory set by the host: reported
    with pytest.raises(SimError) as e:
        lib.launch("transpose_tile", {0: x, 1: y}, (W // T, H // T), (T, T), tg_mem=[T * T * 4])
    assert "[[threadgroup(0)]]" in str(e.value)
    with pytest.raises(SimError) as e:
        lib.launch("transpose_tile", {0: x, 1: y}, (W // T, H // T), (T, T), tg_mem=[40000])
    assert "32768" in str(e.value)
    with pytest.raises(SimError) as e:
        lib.launch("transpose_tile", {0: x, 1: y}, (W // T, H // T), (T, T), tg_mem=[T * (T + 1) * 4 + 4])
    assert e.value.code == 1 and "multiple of 16" in str(e.value)


def test_atomics(lib):
    x = (np.arange(4096, dtype=np.uint32) * 7) % 23
    hist = np.zeros(16, np.uint32)
    lib.launch("histogram", {0: x, 1: hist}, (16,), (256,), workers=2)
    np.testing.assert_array_equal(hist, np.bincount(x % 16, minlength=16))


# ----------------------------------------------------------------------------------------
def test_oob_read_reported(lib):
    x = np.zeros(1024, np.float32)
    y = np.zeros(1024, np.float32)
    lib.launch("oob_read", {0: x, 1: y, 2: scalar(0)}, (4,), (256,))
    with pytest.raises(SimError) as e:
        lib.launch("oob_read", {0: x, 1: y, 2: scalar(1)}, (4,), (256,))
    msg = str(e.value)
    assert "out-of-bounds device read of buffer(0)" in msg and "byte offset 4096" in msg
    assert "kernel 'oob_read'" in msg and "threadgroup (3,0,0)" in msg and "thread (255,0,0)" in msg
    with pytest.raises(SimError) as e:
        lib.launch("oob_read", {0: x, 1: y, 2: scalar(-1)}, (4,), (256,))
    assert "buffer(0)" in str(e.value) and "byte offset -4" in str(e.value)


def test_oob_write_reported(lib):
    y = np.zeros(1000, np.float32)
    with pytest.raises(SimError) as e:
        lib.launch("oob_write", {0: y, 1: scalar(1000)}, (1,), (1,))
    assert "write of buffer(0)" in str(e.value)
    # a write just past the end of a buffer whose size is not a multiple of 16 (canary)
    y = np.zeros(1001, np.float32)
    with pytest.raises(SimError) as e:
        lib.launch("oob_write", {0: y, 1: scalar(1001)}, (1,), (1,))
    assert "write of buffer(0)" in str(e.value)


def test_unbound_buffer_reported(lib):
    y = np.zeros(16, np.float32)
    with pytest.raises(SimError) as e:
        lib.launch("oob_write", {0: y}, (1,), (1,))
    assert e.value.code == 1 and "buffer(1) is not bound" in str(e.value)


def run_isolated(libpath, name, nbuf_floats, grid, tg, timeout=30):
    """Launches in a subprocess so a hang fails the test instead of blocking it."""
    code = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {HERE!r})
        import simlib
        L = simlib.SimLib({libpath!r})
        try:
            L.launch({name!r}, {{0: np.zeros({nbuf_floats}, np.float32)}}, {grid!r}, {tg!r})
            print("NO ERROR")
        except simlib.SimError as e:
            print("SIMERROR:", e)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    return r.stdout + r.stderr


def test_divergent_barrier_reported(libpath):
    out = run_isolated(libpath, "divergent_barrier", 64, (2,), (64,))
    assert "SIMERROR" in out and "threadgroup_barrier" in out and "returned" in out, out


def test_different_barriers_reported(libpath):
    out = run_isolated(libpath, "different_barriers", 64, (1,), (64,))
    assert "SIMERROR" in out and "divergent barrier" in out, out


def test_divergent_simd_reported(libpath):
    out = run_isolated(libpath, "divergent_simd", 64, (1,), (32,))
    assert "SIMERROR" in out and "simd" in out and "lane 16" in out, out


def test_uninitialized_threadgroup_read(lib):
    y = np.zeros(64, np.float32)
    with pytest.raises(SimError) as e:
        lib.launch("uninit_tg_read", {0: y}, (1,), (64,))
    msg = str(e.value)
    assert "uninitialized threadgroup memory" in msg and "'t'" in msg and "offset 252" in msg
    assert "thread (0,0,0)" in msg


def test_threadgroup_oob(lib):
    y = np.zeros(32, np.float32)
    with pytest.raises(SimError) as e:
        lib.launch("tg_oob", {0: y}, (1,), (32,))
    assert "out-of-bounds threadgroup read" in str(e.value) and "'t'" in str(e.value)


def test_threadgroup_limit(lib):
    y = np.zeros(64, np.float32)
    with pytest.raises(SimError) as e:
        lib.launch("tg_too_big", {0: y}, (1,), (64,))
    assert "32768" in str(e.value)


def test_stride_bug_caught(lib):
    x = np.ones(128, np.float32)
    y = np.zeros(128, np.float32)
    with pytest.raises(SimError) as e:
        lib.launch("stride_bug", {0: x, 1: y}, (1,), (64,))
    assert "uninitialized threadgroup memory" in str(e.value)


# ----------------------------------------------------------------------------------------
def test_semantics(lib):
    x = np.array([0.1, 1.00390625 + 2**-9, -2.5, 0.333, 65504.0, 1e-8, 0.75], np.float32)
    hin = (np.arange(64, dtype=np.float32) * 0.37).astype(np.float16)
    out = np.zeros(64, np.float32)
    uout = np.zeros(16, np.uint32)
    params = np.array([7, 1.5], dtype=np.float32)
    params[0:1] = np.array([7], np.int32).view(np.float32)
    lib.launch("semantics", {0: x, 1: out, 2: uout, 3: params, 4: hin}, (1,), (32,))
    h = np.float16(x[0])
    assert out[0] == np.float32(h)
    assert out[1] == np.float32(h * h + h)  # numpy float16 rounds each operation
    acc = np.float16(0)
    for v in hin:
        acc = np.float16(acc + v)
    assert out[2] == np.float32(acc)
    bf, bits = to_bf16(x[1])
    assert out[3] == bf and uout[0] == bits
    assert out[3] == 1.0078125  # tie-breaking case: rounds to even mantissa
    assert out[4] == to_bf16(np.float32(bf) * 3)[0]
    assert uout[1] == x[0:1].view(np.uint32)[0]
    np.testing.assert_array_equal(out[5:9], x[2:6].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(out[9:13], [3, 4, 1, 2])
    np.testing.assert_array_equal(out[13:17], [3, 5, 7, 19])
    assert out[17] == 20
    np.testing.assert_array_equal(out[18:22], [7, 8, 3, -1])
    np.testing.assert_array_equal(out[22:25], [16, 8, 16])
    np.testing.assert_array_equal(uout[2:4], np.array([1.0, 2.0], np.float32).view(np.uint32))
    assert uout[4] == 4321
    assert uout[5] == np.uint32(np.int32(-1).view(np.uint32)) and uout[6] == 2
    assert out[25] == 2.5 + 1 and out[26] == 4 + 2.5
    assert out[27] == 0.75 and out[28] == 2.0
    assert out[29] == np.float32(x[0] * 2 + 1)
    assert abs(out[30] - np.e) < 1e-6 and out[31] == 0.5
    assert out[32] == 65504.0 and out[33] == np.finfo(np.float32).min
    assert out[34] == 10.5 and out[35] == 7
    assert out[36] == 2.0 and out[37] == 5.0
    assert uout[7] == 0 + 2 + 4
    assert out[38] == 12 + 3
    assert out[39] == 0
    assert out[40] == 1


def test_simd_ops(lib):
    K = 16
    for tg in (64, 48):  # 48: second simdgroup has 16 lanes
        x = np.arange(tg, dtype=np.float32) * 1.5 - 7
        out = np.zeros(tg * K, np.float32)
        lib.launch("simd_ops", {0: x, 1: out}, (1,), (tg,))
        out = out.reshape(tg, K)
        for s0 in range(0, tg, 32):
            v = x[s0:s0 + 32]
            n = len(v)
            o = out[s0:s0 + n]
            lanes = np.arange(n)
            np.testing.assert_array_equal(o[:, 0], v[(lanes + 5) % n])
            np.testing.assert_array_equal(o[:, 1], np.where(lanes + 3 < n, v[np.minimum(lanes + 3, n - 1)], v))
            np.testing.assert_array_equal(o[:, 2], np.where(lanes >= 2, v[np.maximum(lanes - 2, 0)], v))
            np.testing.assert_array_equal(o[:, 3], np.where((lanes ^ 7) < n, v[np.minimum(lanes ^ 7, n - 1)], v))
            np.testing.assert_array_equal(o[:, 4], v[9 % n])
            assert (o[:, 5] == v.max()).all() and (o[:, 6] == v.min()).all()
            np.testing.assert_allclose(o[:, 7], np.concatenate([[0], np.cumsum(v)[:-1]]))
            assert (o[:, 8] == v.astype(np.int32).sum()).all()
            np.testing.assert_allclose(o[:, 9], np.cumsum(v))
            assert (o[:, 10] == n).all()
            assert (o[:, 11] == float((v > 30).any())).all()
            np.testing.assert_array_equal(o[:, 12], np.where(lanes + 4 < n, v[np.minimum(lanes + 4, n - 1)],
                                                             -v[np.maximum(lanes + 4 - n, 0)]))
            np.testing.assert_array_equal(o[:, 13], np.where(lanes >= 4, v[np.maximum(lanes - 4, 0)],
                                                             -v[np.minimum(n - 4 + lanes, n - 1)]))
            np.testing.assert_array_equal(o[:, 14], v[(lanes + 5) % n])
            ballot = sum(1 << i for i in range(n) if v[i] > 0)
            assert (o[:, 15] == np.float32(ballot)).all()


def test_simd_vector_and_half(lib):
    x = np.random.default_rng(2).standard_normal((64, 4)).astype(np.float32)
    out = np.zeros((2, 4), np.float32)
    hout = np.zeros(2, np.float16)
    lib.launch("simd_vec", {0: x, 1: out, 2: hout}, (1,), (64,))
    np.testing.assert_allclose(out, x.reshape(2, 32, 4).sum(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hout, x[:, 0].astype(np.float16).reshape(2, 32).astype(np.float32).sum(1), atol=2e-2)


@pytest.mark.parametrize("name,dtype", [("mma8_float", np.float32), ("mma8_half", np.float16)])
def test_simdgroup_mma(lib, name, dtype):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((8, 8)).astype(dtype)
    B = rng.standard_normal((8, 8)).astype(dtype)
    C = rng.standard_normal((8, 8)).astype(np.float32)
    D = np.zeros((8, 8), np.float32)
    lib.launch(name, {0: A, 1: B, 2: C, 3: D}, (1,), (32,))
    ref = A.astype(np.float32) @ B.astype(np.float32) + C
    np.testing.assert_allclose(D, ref, rtol=1e-5, atol=1e-5)


def test_simdgroup_mma_bfloat(lib):
    rng = np.random.default_rng(4)
    Af, Ab = to_bf16(rng.standard_normal((8, 8)).astype(np.float32))
    Bf, Bb = to_bf16(rng.standard_normal((8, 8)).astype(np.float32))
    C = np.zeros((8, 8), np.float32)
    D = np.zeros((8, 8), np.float32)
    lib.launch("mma8_bfloat", {0: Ab, 1: Bb, 2: C, 3: D}, (1,), (32,))
    np.testing.assert_allclose(D, Af @ Bf, rtol=1e-5, atol=1e-5)


def test_simdgroup_gemm_threadgroup_transpose(lib):
    rng = np.random.default_rng(5)
    A = rng.standard_normal((16, 16)).astype(np.float16)
    B = rng.standard_normal((16, 16)).astype(np.float16)
    C = np.zeros((16, 16), np.float16)
    lib.launch("gemm16_nt", {0: A, 1: B, 2: C}, (1,), (128,))
    ref = (A.astype(np.float32) @ B.astype(np.float32).T).astype(np.float16)
    np.testing.assert_allclose(C.astype(np.float32), ref.astype(np.float32), rtol=2e-3, atol=2e-3)


def qmv_reference(wq, scales, biases, x, gs):
    N, K = wq.shape
    s = np.repeat(scales.astype(np.float32), gs, axis=1)
    b = np.repeat(biases.astype(np.float32), gs, axis=1)
    return (s * wq + b) @ x.astype(np.float32)


@pytest.mark.parametrize("tname,dtype,gs,rows", [("float32", np.float32, 64, 4), ("float16", np.float16, 64, 4)])
def test_qmv_template_kernel(lib, tname, dtype, gs, rows):
    rng = np.random.default_rng(6)
    N, K = 40, 512
    wq = rng.integers(0, 16, (N, K)).astype(np.uint8)
    packed = (wq[:, 0::2] | (wq[:, 1::2] << 4)).astype(np.uint8).view(np.uint32)
    scales = (rng.random((N, K // gs)) * 0.1).astype(dtype)
    biases = (rng.standard_normal((N, K // gs)) * 0.1).astype(dtype)
    x = rng.standard_normal(K).astype(dtype)
    y = np.zeros(N, dtype)
    strides = np.array([0, 0], np.int32)
    ntg = (N + 2 * rows - 1) // (2 * rows)
    lib.launch(f"qmv_fast_{tname}_gs_{gs}_b_4",
               {0: packed, 1: scales, 2: biases, 3: x, 4: y, 5: scalar(K), 6: scalar(N), 7: strides},
               (ntg, 1), (64, 1), tg_mem=[2 * rows * 4])
    ref = qmv_reference(wq, scales, biases, x, gs)
    tol = 1e-3 if dtype == np.float32 else 3e-2
    np.testing.assert_allclose(y.astype(np.float32), ref, rtol=tol, atol=tol * 4)


# ----------------------------------------------------------------------------------------
# build-time rejection of what Metal does not allow
FORBIDDEN = {
    "double": """
        #include <metal_stdlib>
        using namespace metal;
        [[kernel]] void k(device float* o [[buffer(0)]], uint i [[thread_position_in_grid]]) {
          double d = o[i];
          o[i] = float(d * 2);
        }""",
    "std_header": """
        #include <metal_stdlib>
        #include <vector>
        using namespace metal;
        [[kernel]] void k(device float* o [[buffer(0)]]) { o[0] = 1; }""",
    "throw": """
        #include <metal_stdlib>
        using namespace metal;
        [[kernel]] void k(device float* o [[buffer(0)]], uint i [[thread_position_in_grid]]) {
          if (o[i] < 0) throw 1;
        }""",
    "recursion": """
        #include <metal_stdlib>
        using namespace metal;
        static int fact(int n, device float* o) { if (n <= 1) return 1; o[n] = n; return n * fact(n - 1, o) + 1; }
        [[kernel]] void k(device float* o [[buffer(0)]], constant int& n [[buffer(1)]]) { o[0] = fact(n, o); }""",
    "address_space_mix": """
        #include <metal_stdlib>
        using namespace metal;
        static void put(device float* dst, float v) { dst[0] = v; }
        [[kernel]] void k(device float* o [[buffer(0)]], uint i [[thread_index_in_threadgroup]]) {
          threadgroup float t[32];
          put(t, 1.0f);
          o[i] = t[0];
        }""",
    "write_to_constant": """
        #include <metal_stdlib>
        using namespace metal;
        [[kernel]] void k(constant float* c [[buffer(0)]], device float* o [[buffer(1)]]) { c[0] = 1; o[0] = c[0]; }""",
    "mixed_vector_types": """
        #include <metal_stdlib>
        using namespace metal;
        [[kernel]] void k(device float4* o [[buffer(0)]], device half4* h [[buffer(1)]]) { o[0] = o[0] + h[0]; }""",
    "rtti": """
        #include <metal_stdlib>
        using namespace metal;
        struct B { int x; virtual int f() { return 1; } };
        struct D : B { int f() override { return 2; } };
        [[kernel]] void k(device float* o [[buffer(0)]]) { D d; B* b = &d; o[0] = dynamic_cast<D*>(b) ? 1 : 0; }""",
}

EXPECT = {"double": "double", "std_header": "vector", "throw": "exception", "recursion": "recursion",
          "address_space_mix": "from 'threadgroup float[32]' to 'device float *", "write_to_constant": "const", "mixed_vector_types":
          "different element types", "rtti": "rtti"}


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_forbidden_rejected(tmp_path, cache_dir, what):
    with pytest.raises(mb.BuildError) as e:
        build_snippet(tmp_path, FORBIDDEN[what], what, cache_dir)
    assert EXPECT[what] in str(e.value), str(e.value)[-2000:]


def test_build_cli_and_timing(tmp_path, cache_dir):
    out = tmp_path / "libcli.so"
    t = time.time()
    r = subprocess.run([sys.executable, os.path.join(mb.HERE, "metalsim_build.py"), "--out", str(out),
                        "--clang", CLANG, "--cache-dir", cache_dir,
                        "-I", os.path.join(HERE, "kernels")] + KERNELS[:2], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert time.time() - t < 60
    L = simlib.SimLib(str(out))
    assert L.has("reverse_tg") or L.has("row_dot_float32")
    r = subprocess.run([sys.executable, os.path.join(mb.HERE, "metalsim_build.py"), "--out", str(out),
                        str(tmp_path / "missing.metal")], capture_output=True, text=True)
    assert r.returncode != 0 and "error" in r.stderr


def test_launch_throughput(lib):
    """256 threads x 64 threadgroups with 4 barriers; and the cost of one suspension."""
    x = np.arange(64 * 256, dtype=np.float32)
    y = np.zeros_like(x)
    lib.launch("four_barriers", {0: x, 1: y}, (64,), (256,))
    np.testing.assert_array_equal(y, 2 * x + 1)
    for workers in (1, 0):
        n = 0
        t = time.time()
        while time.time() - t < 0.5:
            lib.launch("four_barriers", {0: x, 1: y}, (64,), (256,), workers=workers)
            n += 1
        dt = (time.time() - t) / n
        print(f"\nfour_barriers 64 x 256 threads, workers={workers}: {1 / dt:.0f} launches/s")
    assert dt < 0.5
    out = np.zeros(1024, np.float32)
    iters = 200
    t = time.time()
    lib.launch("barrier_loop", {0: out, 1: scalar(iters)}, (1,), (1024,), workers=1)
    dt = time.time() - t
    assert (out == iters).all()
    print(f"barrier_loop: {dt / (1024 * iters) * 1e9:.0f} ns per thread suspension+resume")


def test_style_features(lib):
    out = np.zeros(32, np.float32)
    out[16:24] = np.arange(1, 9)
    scale = np.array([2, 5], np.float32)
    idx = np.array([2], np.int32)
    big = np.array([(7 << 32) | 5, 0x12345], np.int64)
    lib.launch("old_style_kernel", {0: out, 1: scale, 2: idx, 3: big}, (1,), (64,))
    v = np.arange(1, 9, dtype=np.float32)
    np.testing.assert_array_equal(out[0:8], 2 * v)
    np.testing.assert_array_equal(out[8:16], 2 * v)
    np.testing.assert_array_equal(out[24:30], [25, 9.5, 52, 7, 66, (0x12345 * 3) & 0xFFFF])


@pytest.mark.parametrize("tname,dtype", [("float32", np.float32), ("int32", np.int32), ("float16", np.float16)])
@pytest.mark.parametrize("bm,bn", [(4, 8), (8, 16)])
def test_nested_macro_instantiation(lib, tname, dtype, bm, bn):
    out = np.zeros((2 * bm, bn), dtype)
    lib.launch(f"fill_tile_{tname}_{bm}x{bn}", {0: out}, (1, 2), (bn, bm))
    y, x = np.meshgrid(np.arange(2 * bm), np.arange(bn), indexing="ij")
    ref = (bm - 1 - y % bm) * 100 + x + y // bm
    np.testing.assert_array_equal(out, ref.astype(dtype))


def test_aliasing_bindings(lib):
    arr = np.zeros(80, np.float32)
    lib.launch("add_two_views", {0: arr[0:64], 1: arr[16:80]}, (1,), (64,))
    np.testing.assert_array_equal(arr[:16], 1)
    np.testing.assert_array_equal(arr[16:64], 11)
    np.testing.assert_array_equal(arr[64:], 10)
    same = np.zeros(64, np.float32)
    lib.launch("add_two_views", {0: same, 1: same}, (1,), (64,))
    np.testing.assert_array_equal(same, 11)


def test_namespaced_kernels(lib):
    for name, dt in (("ns_scale_float", np.float32), ("ns_scale_half", np.float16)):
        x = np.arange(64, dtype=dt)
        lib.launch(name, {0: x, 1: scalar(0.5, np.float32)}, (2,), (32,))
        np.testing.assert_array_equal(x, (np.arange(64) * 0.5).astype(dt))
    x = np.zeros(32, np.float32)
    lib.launch("ns_plain", {0: x}, (1,), (32,))
    assert (x == 1).all()


C_API_PROGRAM = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "mlxk_metal_sim.h"

typedef int (*launch_fn)(const char*, const mlxk_sim_buffer*, int, const mlxk_sim_launch_params*, char*, size_t);

int main(int argc, char** argv) {
  void* h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!h) { printf("dlopen: %s\n", dlerror()); return 1; }
  launch_fn launch = (launch_fn)dlsym(h, "mlxk_sim_launch");
  int (*has)(const char*) = (int (*)(const char*))dlsym(h, "mlxk_sim_has_kernel");
  int (*ver)(void) = (int (*)(void))dlsym(h, "mlxk_sim_api_version");
  if (!launch || !has || !ver || ver() != MLXK_SIM_API_VERSION || !has("reverse_tg")) return 2;
  float in[512], out[512];
  for (int i = 0; i < 512; ++i) { in[i] = (float)i; out[i] = 0; }
  mlxk_sim_buffer bufs[2] = {{0, in, sizeof in}, {1, out, sizeof out}};
  mlxk_sim_launch_params p;
  memset(&p, 0, sizeof p);
  p.grid[0] = 2; p.grid[1] = 1; p.grid[2] = 1;
  p.threadgroup[0] = 256; p.threadgroup[1] = 1; p.threadgroup[2] = 1;
  char err[1024];
  if (launch("reverse_tg", bufs, 2, &p, err, sizeof err) != 0) { printf("launch: %s\n", err); return 3; }
  for (int i = 0; i < 512; ++i)
    if (out[i] != (float)((i / 256) * 256 + 255 - i % 256)) { printf("wrong at %d\n", i); return 4; }
  bufs[0].size = 100 * sizeof(float);  /* too small: out-of-bounds read */
  int rc = launch("reverse_tg", bufs, 2, &p, err, sizeof err);
  printf("rc=%d msg=%s\n", rc, err);
  return rc == 2 ? 0 : 5;
}
"""


def test_c_api_from_gcc(libpath, tmp_path):
    import shutil
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("no C compiler")
    src = tmp_path / "smoke.c"
    src.write_text(C_API_PROGRAM)
    exe = tmp_path / "smoke"
    subprocess.run([cc, "-std=c99", "-Wall", "-Werror", "-I", os.path.join(mb.SIM_DIR, "include"), str(src),
                    "-o", str(exe), "-ldl"], check=True)
    r = subprocess.run([str(exe), libpath], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "out-of-bounds device read of buffer(0)" in r.stdout


def test_concurrent_launches(lib):
    import threading
    errors = []

    def worker(seed):
        try:
            x = np.arange(4 * 256, dtype=np.float32) + seed
            for _ in range(10):
                y = np.zeros_like(x)
                lib.launch("reverse_tg", {0: x, 1: y}, (4,), (256,), workers=2)
                np.testing.assert_array_equal(y, x.reshape(4, 256)[:, ::-1].ravel())
                with pytest.raises(SimError):
                    lib.launch("oob_read", {0: x, 1: y, 2: scalar(1)}, (4,), (256,))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(s,)) for s in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


def test_stack_overflow_reported(tmp_path, cache_dir):
    L = build_snippet(tmp_path, """
        #include <metal_stdlib>
        using namespace metal;
        [[kernel]] void big_private(device float* o [[buffer(0)]], constant int& n [[buffer(1)]],
                                    uint i [[thread_position_in_grid]]) {
          float big[40000];
          for (int k = 0; k < n; ++k) big[k] = o[k % 4] + k;
          o[i] = big[n / 2];
        }""", "stack", cache_dir)
    o = np.zeros(4, np.float32)
    with pytest.raises(SimError) as e:
        L.launch("big_private", {0: o, 1: scalar(40000)}, (1,), (4,))
    assert "stack overflow" in str(e.value) and "MLXK_SIM_STACK_KB" in str(e.value)


def test_depfile_and_find_clang(tmp_path, cache_dir):
    script = os.path.join(mb.HERE, "metalsim_build.py")
    r = subprocess.run([sys.executable, script, "--find-clang"], capture_output=True, text=True)
    assert r.returncode == 0 and os.path.exists(r.stdout.strip())
    out, dep = tmp_path / "libd.so", tmp_path / "libd.d"
    mb.build([os.path.join(HERE, "kernels", "reduce.metal")], str(out), clang=CLANG, cache_dir=cache_dir,
             depfile=str(dep))
    text = dep.read_text()
    assert text.startswith(str(out) + ":") and "common.h" in text and "metal_stdlib" in text


def test_threadgroup_pointer_locals(lib):
    x = np.arange(64, dtype=np.float32)
    y = np.zeros(64, np.float32)
    lib.launch("tg_pointers", {0: x, 1: y}, (2,), (64,))
    np.testing.assert_array_equal(y, x[::-1] + 2 * x + 1000)


@pytest.mark.parametrize("tname,dtype,tol", [("float32", np.float32, 1e-5), ("float16", np.float16, 2e-3)])
def test_rms_norm(lib, tname, dtype, tol):
    rng = np.random.default_rng(7)
    rows, D = 6, 1000  # 250 threads: a partial last simdgroup and partial last thread
    x = rng.standard_normal((rows, D)).astype(dtype)
    w = rng.standard_normal(D).astype(dtype)
    out = np.zeros_like(x)
    bufs = {0: x, 1: w, 2: out, 3: scalar(1e-5, np.float32), 4: scalar(D, np.uint32)}
    lib.launch(f"rms_{tname}", bufs, (rows,), (256,))
    xf = x.astype(np.float32)
    ref = w.astype(np.float32) * (xf / np.sqrt((xf * xf).mean(1, keepdims=True) + 1e-5))
    np.testing.assert_allclose(out.astype(np.float32), ref, rtol=tol * 4, atol=tol * 4)
    # the variant that does not clear the partial-sum slots reads threadgroup memory nobody wrote
    with pytest.raises(SimError) as e:
        lib.launch(f"rms_noinit_{tname}", bufs, (rows,), (256,))
    assert "uninitialized threadgroup memory" in str(e.value) and "'local_sums'" in str(e.value)
    # ... unless every slot has a simdgroup (1024 threads = 32 simdgroups)
    x2 = rng.standard_normal((rows, 4096)).astype(dtype)
    out2 = np.zeros_like(x2)
    lib.launch(f"rms_noinit_{tname}", {0: x2, 1: np.ones(4096, dtype), 2: out2, 3: scalar(1e-5, np.float32),
                                       4: scalar(4096, np.uint32)}, (rows,), (1024,))
    x2f = x2.astype(np.float32)
    np.testing.assert_allclose(out2.astype(np.float32), x2f / np.sqrt((x2f * x2f).mean(1, keepdims=True) + 1e-5),
                               rtol=tol * 4, atol=tol * 4)


@pytest.fixture(scope="session")
def lib_checked(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("simlib_checked") / "libchecked.so"
    srcs = [os.path.join(HERE, "kernels", f) for f in ("errors.metal", "qmv.metal", "style.metal")]
    mb.build(srcs, str(out), clang=CLANG, cache_dir=cache_dir, device_checks=True)
    return simlib.SimLib(str(out))


def test_precise_device_bounds(lib, lib_checked):
    x = np.zeros(101, np.float32)  # 404 bytes: not a multiple of the 16-byte alignment
    y = np.zeros(101, np.float32)
    # small underflow and an overrun into the alignment slack: invisible to guard pages ...
    for off in (-1, 1):
        lib.launch("oob_read", {0: x, 1: y, 2: scalar(off)}, (1,), (101,))
    # ... reported with --check-device-bounds, with the exact offset
    with pytest.raises(SimError) as e:
        lib_checked.launch("oob_read", {0: x, 1: y, 2: scalar(-1)}, (1,), (101,))
    assert "out-of-bounds device read of 4 byte(s) of buffer(0) at byte offset -4" in str(e.value)
    assert "thread (0,0,0)" in str(e.value)
    with pytest.raises(SimError) as e:
        lib_checked.launch("oob_read", {0: x, 1: y, 2: scalar(1)}, (1,), (101,))
    assert "buffer(0) at byte offset 404" in str(e.value) and "thread (100,0,0)" in str(e.value)
    with pytest.raises(SimError) as e:
        lib_checked.launch("oob_write", {0: y, 1: scalar(101)}, (1,), (1,))
    assert "device write of 4 byte(s) of buffer(0) at byte offset 404" in str(e.value)
    # in-bounds kernels, program-scope constant data, aliasing still fine
    out = np.zeros(32, np.float32)
    out[16:24] = np.arange(1, 9)
    lib_checked.launch("old_style_kernel", {0: out, 1: np.array([2, 5], np.float32), 2: np.array([2], np.int32),
                                            3: np.array([(7 << 32) | 5, 0x12345], np.int64)}, (1,), (64,))
    np.testing.assert_array_equal(out[24:30], [25, 9.5, 52, 7, 66, (0x12345 * 3) & 0xFFFF])


def test_device_checks_cost(lib, lib_checked):
    rng = np.random.default_rng(6)
    N, K, gs = 64, 2048, 64
    wq = rng.integers(0, 16, (N, K)).astype(np.uint8)
    packed = (wq[:, 0::2] | (wq[:, 1::2] << 4)).astype(np.uint8).view(np.uint32)
    scales = (rng.random((N, K // gs)) * 0.1).astype(np.float32)
    biases = (rng.standard_normal((N, K // gs)) * 0.1).astype(np.float32)
    x = rng.standard_normal(K).astype(np.float32)
    times = []
    for L in (lib, lib_checked):
        y = np.zeros(N, np.float32)
        bufs = {0: packed, 1: scales, 2: biases, 3: x, 4: y, 5: scalar(K), 6: scalar(N), 7: np.zeros(2, np.int32)}
        t = time.time()
        for _ in range(5):
            L.launch("qmv_fast_float32_gs_64_b_4", bufs, (N // 8, 1), (64, 1), tg_mem=[32], workers=1)
        times.append((time.time() - t) / 5)
        np.testing.assert_allclose(y, qmv_reference(wq, scales, biases, x, gs), rtol=1e-3, atol=1e-3)
    print(f"\nqmv 64x2048: {times[0] * 1e3:.2f} ms, with device bounds checks {times[1] * 1e3:.2f} ms")


def test_namespace_scoped_types(lib):
    x = np.arange(32, dtype=np.float32)
    lib.launch("ns_affine", {0: x, 1: np.array([2, 1], np.float32)}, (1,), (32,))
    np.testing.assert_array_equal(x, np.arange(32) * 2 + 1)
    lib.launch("anon_inc", {0: x}, (1,), (32,))
    np.testing.assert_array_equal(x, np.arange(32) * 2 + 3)


def test_integer_division_by_zero_reported(lib):
    a = np.arange(64, dtype=np.int32)
    b = np.ones(64, np.int32)
    out = np.zeros(64, np.int32)
    lib.launch("int_div", {0: a, 1: b, 2: out}, (1,), (64,))
    np.testing.assert_array_equal(out, a)
    b[40] = 0
    with pytest.raises(SimError) as e:
        lib.launch("int_div", {0: a, 1: b, 2: out}, (1,), (64,))
    assert "division by zero" in str(e.value) and "thread (40,0,0)" in str(e.value)


@pytest.mark.parametrize("name,dtype", [("row_max_float", np.float32), ("row_max_half", np.float16)])
def test_atomic_cas_row_max(lib, name, dtype):
    x = np.random.default_rng(0).standard_normal((4, 1000)).astype(dtype)
    out = np.full(4, -1e30, np.float32).view(np.uint32).copy()
    lib.launch(name, {0: x, 1: out, 2: np.array([1000], np.uint64)}, (1, 4), (128, 1), workers=2)
    np.testing.assert_array_equal(out.view(np.float32), x.astype(np.float32).max(1))


@pytest.mark.parametrize("tname,dtype,tol", [("float32", np.float32, 1e-4), ("float16", np.float16, 2e-2)])
def test_steel_style_gemm(lib, tname, dtype, tol):
    rng = np.random.default_rng(8)
    M, N, K = 64, 96, 48
    A = rng.standard_normal((M, K)).astype(dtype)
    B = rng.standard_normal((K, N)).astype(dtype)
    C = np.zeros((M, N), dtype)
    lib.launch(f"gemm_nn_{tname}_32x32x16", {0: A, 1: B, 2: C, 3: np.array([M, N, K, 0], np.int32)},
               (N // 32, M // 32), (128,))
    ref = A.astype(np.float32) @ B.astype(np.float32)
    np.testing.assert_allclose(C.astype(np.float32), ref, rtol=tol, atol=tol * 4)


def test_steel_style_gemm_bfloat(lib):
    rng = np.random.default_rng(9)
    M, N, K = 32, 32, 32
    Af, Ab = to_bf16(rng.standard_normal((M, K)).astype(np.float32))
    Bf, Bb = to_bf16(rng.standard_normal((K, N)).astype(np.float32))
    C = np.zeros((M, N), np.uint16)
    lib.launch("gemm_nn_bfloat16_32x32x16", {0: Ab, 1: Bb, 2: C, 3: np.array([M, N, K, 0], np.int32)}, (1, 1), (128,))
    np.testing.assert_array_equal(C, to_bf16((Af @ Bf).astype(np.float32))[1])


def test_race_across_simdgroups_reported(lib):
    out = np.zeros(64, np.float32)
    with pytest.raises(SimError) as e:
        lib.launch("simd_not_a_barrier", {0: out}, (1,), (64,))
    assert "data race" in str(e.value) and "reads byte" in str(e.value) and "wrote since" in str(e.value)
    lib.launch("intra_simd_exchange", {0: out}, (1,), (64,))
    np.testing.assert_array_equal(out, np.arange(64) ^ 1)


def test_barrier_without_threadgroup_fence(lib):
    out = np.zeros(64, np.float32)
    with pytest.raises(SimError) as e:
        lib.launch("unfenced_barrier", {0: out}, (1,), (64,))
    assert "data race" in str(e.value) and "lacks mem_flags::mem_threadgroup" in str(e.value)


def test_two_libraries_and_host_crash(libpath, lib_checked, tmp_path):
    """Two simulator libraries in one process keep reporting their own faults, and a crash
    outside any kernel still terminates the process (no handler loop)."""
    code = textwrap.dedent(f"""
        import sys, ctypes, faulthandler, numpy as np
        sys.path.insert(0, {HERE!r})
        import simlib
        A = simlib.SimLib({libpath!r})
        x = np.zeros(1024, np.float32); y = np.zeros(1024, np.float32)
        try:
            A.launch("oob_read", {{0: x, 1: y, 2: np.array([1], np.int32)}}, (4,), (256,))
        except simlib.SimError as e:
            print("A:", e)
        B = simlib.SimLib(sys.argv[1])
        faulthandler.enable()
        for L, n in ((B, "B"), (A, "A"), (B, "B")):
            try:
                L.launch("oob_read", {{0: x, 1: y, 2: np.array([1], np.int32)}}, (4,), (256,))
            except simlib.SimError as e:
                print(n + ":", e)
        sys.stdout.flush()
        ctypes.string_at(0)  # a real crash outside kernels
    """)
    out = tmp_path / "two.py"
    out.write_text(code)
    r = subprocess.run([sys.executable, str(out), lib_checked.lib._name], capture_output=True, text=True, timeout=60)
    lines = [x for x in r.stdout.splitlines() if x.startswith(("A:", "B:"))]
    assert len(lines) == 4 and all("out-of-bounds device read" in x and "buffer(0)" in x for x in lines), r.stdout + r.stderr
    assert "Fatal Python error" in r.stderr  # faulthandler saw the host crash
    assert r.returncode != 0


def test_library_misc(lib):
    x = np.array([5.0, -1.0, 2.0, np.nan, np.inf], np.float32)
    out = np.zeros(16, np.float32)
    uout = np.zeros(4, np.uint32)
    lib.launch("library_misc", {0: x, 1: out, 2: uout}, (1,), (1,))
    np.testing.assert_array_equal(out[:10], [6 + 3, 5, -1, 2, 8 + 31 + 3, 5 + (-6) * 0.25, 5, 3, 4, 5])
    assert uout[0] == 0x80000000 and uout[1] == 0xBC


@pytest.mark.parametrize("name,dtype,tol", [("math_funcs_float", np.float32, 2e-6), ("math_funcs_half", np.float16, 2e-3)])
def test_math_functions(lib, name, dtype, tol):
    x = np.linspace(-3.3, 3.3, 64).astype(dtype)
    out = np.zeros((64, 20), np.float32)
    lib.launch(name, {0: x, 1: out}, (2,), (32,))
    v = x.astype(np.float32)
    a = np.abs(v)
    refs = [np.exp(v), np.exp2(v), np.log(a + 1), np.log2(a + 1), np.sqrt(a), 1 / np.sqrt(a + 1), np.sin(v),
            np.cos(v), np.tanh(v), np.floor(v), np.ceil(v), np.trunc(v + np.copysign(0.5, v)), np.trunc(v),
            v - np.floor(v), np.sign(v), a ** 1.5, np.fmod(v, 0.75), np.clip(v, 0, 1), np.maximum(v, 0.5),
            np.arctan2(v, 2)]
    for j, ref in enumerate(refs):
        ref = ref.astype(np.float32)
        if dtype == np.float16:
            ref = ref.astype(np.float16).astype(np.float32)  # one rounding of the float result
        np.testing.assert_allclose(out[:, j], ref, rtol=tol, atol=tol, err_msg=f"function {j}")


def test_integer_vectors(lib):
    w = (np.arange(64 * 4, dtype=np.uint32) * 37 % 400).reshape(64, 4)
    out = np.zeros((64, 4, 4), np.uint32)
    iout = np.zeros((64, 2, 4), np.int32)
    lib.launch("int_vectors", {0: w, 1: out, 2: iout}, (2,), (32,))
    np.testing.assert_array_equal(out[:, 0], (w >> 4) & 0xF)
    np.testing.assert_array_equal(out[:, 1], (w << np.array([1, 2, 3, 4], np.uint32)) | 1)
    np.testing.assert_array_equal(out[:, 2], np.where(w > 100, 7, w))
    np.testing.assert_array_equal(out[:, 3], w[:, 0:1].view(np.uint8).reshape(64, 4))
    s = w.astype(np.int32) - 200
    np.testing.assert_array_equal(iout[:, 0], np.fmod(s, 7))  # C remainder
    np.testing.assert_array_equal(iout[:, 1], np.abs(s) // 3 - s)
