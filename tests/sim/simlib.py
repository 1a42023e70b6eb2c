"""ctypes wrapper around a library built by sim/tools/metalsim_build.py (test helper)."""
import ctypes
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "sim", "tools"))
import metalsim_build  # noqa: E402


class Buffer(ctypes.Structure):
    _fields_ = [("index", ctypes.c_int), ("data", ctypes.c_void_p), ("size", ctypes.c_size_t)]


class LaunchParams(ctypes.Structure):
    _fields_ = [("grid", ctypes.c_uint * 3), ("threadgroup", ctypes.c_uint * 3),
                ("threadgroup_mem", ctypes.c_size_t * 8), ("shuffle", ctypes.c_int),
                ("seed", ctypes.c_ulonglong), ("num_workers", ctypes.c_int)]


class SimError(RuntimeError):
    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code


class SimLib:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.mlxk_sim_launch.argtypes = [ctypes.c_char_p, ctypes.POINTER(Buffer), ctypes.c_int,
                                             ctypes.POINTER(LaunchParams), ctypes.c_char_p, ctypes.c_size_t]
        self.lib.mlxk_sim_launch.restype = ctypes.c_int
        self.lib.mlxk_sim_has_kernel.argtypes = [ctypes.c_char_p]
        self.lib.mlxk_sim_kernel_names.restype = ctypes.c_char_p
        self.lib.mlxk_sim_kernel_buffers.restype = ctypes.c_char_p
        self.lib.mlxk_sim_kernel_buffers.argtypes = [ctypes.c_char_p]

    def names(self):
        return self.lib.mlxk_sim_kernel_names().decode().split("\n")

    def has(self, name):
        return bool(self.lib.mlxk_sim_has_kernel(name.encode()))

    def launch(self, name, buffers, grid, threadgroup, tg_mem=(), shuffle=0, seed=0, workers=0):
        """buffers: {index: numpy array or bytes-like}; arrays are updated in place."""
        keep = []
        arr = (Buffer * max(1, len(buffers)))()
        for n, (idx, a) in enumerate(sorted(buffers.items())):
            if not isinstance(a, np.ndarray):
                a = np.frombuffer(bytearray(a), dtype=np.uint8)
            assert a.flags["C_CONTIGUOUS"]
            keep.append(a)
            arr[n] = Buffer(idx, a.ctypes.data if a.nbytes else None, a.nbytes)
        p = LaunchParams()
        g = tuple(grid) + (1,) * (3 - len(grid))
        t = tuple(threadgroup) + (1,) * (3 - len(threadgroup))
        p.grid[:] = g
        p.threadgroup[:] = t
        for i, m in enumerate(tg_mem):
            p.threadgroup_mem[i] = m
        p.shuffle, p.seed, p.num_workers = shuffle, seed, workers
        err = ctypes.create_string_buffer(4096)
        rc = self.lib.mlxk_sim_launch(name.encode(), arr, len(buffers), ctypes.byref(p), err, 4096)
        if rc != 0:
            raise SimError(rc, err.value.decode())


def scalar(v, dtype=np.int32):
    return np.array([v], dtype=dtype)
