/* C API of a kernel library built by sim/tools/metalsim_build.py (the mlx-kernels Metal
 * simulator). Plain C; usable from C, C++ (any compiler) and Python ctypes.
 * The library is self-contained: dlopen() it and call these functions.
 * All functions are thread-safe; launches from different threads may overlap.
 * See docs/metal-simulator.md. */
#ifndef MLXK_METAL_SIM_H
#define MLXK_METAL_SIM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MLXK_SIM_API_VERSION 1

/* One binding per [[buffer(index)]]: device/constant buffers and setBytes data alike.
 * The kernel sees a private copy of [data, data+size) placed between inaccessible guard
 * pages; the copy is written back to data after the launch (unless the kernel declares
 * every parameter bound to it as a pointer/reference to const). Bindings whose host
 * ranges overlap share one copy, so aliasing (in-place kernels) behaves as on a GPU. */
typedef struct {
  int index;
  void* data;
  size_t size;
} mlxk_sim_buffer;

typedef struct {
  unsigned grid[3];          /* threadgroups per grid (dispatchThreadgroups) */
  unsigned threadgroup[3];   /* threads per threadgroup (product <= 1024) */
  size_t threadgroup_mem[8]; /* setThreadgroupMemoryLength for [[threadgroup(i)]] */
  int shuffle;               /* 0: deterministic order; nonzero: seeded random resume order */
  unsigned long long seed;   /* seed for shuffle */
  int num_workers;           /* OS threads running threadgroups in parallel (0 = all cores) */
} mlxk_sim_launch_params;

/* API version of this library (MLXK_SIM_API_VERSION it was built with). */
int mlxk_sim_api_version(void);

/* 1 if a kernel with this host name exists, else 0. */
int mlxk_sim_has_kernel(const char* name);

/* Newline-separated list of the host names of all kernels (static storage). */
const char* mlxk_sim_kernel_names(void);

/* Runs the kernel over the whole grid and waits for it. Returns 0 on success; otherwise
 * nonzero and a NUL-terminated human-readable message in err (if err_len > 0), naming
 * the kernel, the threadgroup, the thread and what happened. Return codes:
 *   1 invalid arguments (unknown kernel, unbound buffer, bad sizes)
 *   2 the kernel misbehaved (out-of-bounds access, divergent barrier, uninitialized
 *     threadgroup read, crash, mlxk_fail ...) */
int mlxk_sim_launch(const char* name, const mlxk_sim_buffer* buffers, int num_buffers,
                    const mlxk_sim_launch_params* p, char* err, size_t err_len);

/* Buffer indices a kernel uses, as a comma-separated list like "0,1,2,5" (static storage),
 * or NULL for an unknown kernel. */
const char* mlxk_sim_kernel_buffers(const char* name);

#ifdef __cplusplus
}
#endif

#endif /* MLXK_METAL_SIM_H */
