// A small persistent pool of worker threads for the CPU kernels.
//
// MLX runs each CPU stream's work on one scheduler thread; a kernel that wants
// all cores calls parallel_for from that thread, which takes part in the work
// and returns when every task is done. Calls from different streams are
// serialised (the pool runs one parallel_for at a time).
#pragma once

#include <functional>

namespace mlx_kernels::cpu {

// Number of threads parallel_for uses (the caller included). Defaults to the
// cores this process may run on; MLX_KERNELS_NUM_THREADS overrides it.
int num_threads();

// Runs task(i) for i in [0, num_tasks), spread over the pool.
void parallel_for(int num_tasks, const std::function<void(int)>& task);

} // namespace mlx_kernels::cpu
