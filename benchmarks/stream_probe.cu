// Ceilings for the CUDA quantized_matmul goals (issue 5), no MLX: how fast can
// ANY kernel read the bytes of each benchmark weight from HBM, what does a
// launch cost, and how does a TMA ring like tc_qmm_bulk's slow down as its
// warps issue more instructions per KB. benchmarks/stream_probe.py builds and
// runs this program twice (CUDA events; Nsight Compute with the flags of
// ncu_qmm_gpu.py) and prints the table; run_h200.sh stage `probe` calls it.
//
// Kernels (each case is one launch; the case list is the same in both modes):
// - empty_kernel: nothing but the launch, with and without 200 KB of dynamic
//   shared memory and thread-block clusters of 1-8 (tc_qmm uses clusters for
//   split-K, tc_qmm_bulk 216 KB of shared memory).
// - ldg_read_kernel<U>: thread t of the grid reads 16-byte chunks
//   t, t + T, t + 2T, ... (T = threads of the grid; coalesced across a warp),
//   U = 4 loads issued before any is used (SASS: 4 LDG.128, then the XORs;
//   at 2048 threads an SM that is 128 KB in flight an SM); "wave": a grid of
//   exactly the blocks that fit at once, looping; "flat": one round a thread,
//   as many blocks as that takes.
// - bulk_read_kernel: tc_qmm_bulk's transport without its math: persistent
//   blocks of 16 warps, one an SM; each warp streams a contiguous range of
//   4608-byte stages (a 16-row tile of 4-bit group-64 weights a stage: 4096
//   bytes + scales + biases) through its own ring of shared-memory slots,
//   filled by 1-D bulk copies from lane 0 (three a stage, as the real
//   kernel's weight, scale and bias copies, or one) completing on the slot's
//   mbarrier; the warp reads every byte of the slot from shared memory, then
//   runs `fma_per_kb` dependent-on-the-data FMA instructions per KB of the
//   stage in four independent chains (the real kernel issues ~126
//   instructions per KB, SASS of session 7), then refills the slot.
//
// Usage: stream_probe --events OUT.json   (CUDA events, L2 flushed by reading
//                                          a 512 MB buffer before each launch)
//        stream_probe --ncu CASES.json    (each case launched once inside
//                                          cudaProfilerStart/Stop; run under ncu)
// Build (sm_90a; from the repository root):
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Icsrc \
//        benchmarks/stream_probe.cu -o build/stream_probe
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/async_copy.cuh"

namespace cu = mlx_kernels::cuda;

#define CK(x)                                                                             \
  do {                                                                                    \
    cudaError_t e_ = (x);                                                                 \
    if (e_ != cudaSuccess) {                                                              \
      std::fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, \
                   __LINE__);                                                             \
      std::exit(2);                                                                       \
    }                                                                                     \
  } while (0)

namespace {

constexpr int kThreads = 512; // every kernel's block
constexpr int kBulkWarps = kThreads / 32;
constexpr int kBulkMaxRing = 4;
constexpr int kBarrierBytes = kBulkWarps * kBulkMaxRing * 8;
constexpr int kStageBytes = 4608; // 16 rows x (256 B of weights + 8 scales + 8 biases of 2 B)
constexpr uint32_t kNever = 0x9E3779B9u; // a value the sinks are (almost) never equal to

// Pseudo-random bytes (never zeros: METHOD.md), one 32-bit hash a word.
__global__ void fill_kernel(uint32_t* p, int64_t words, uint32_t seed) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < words;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 0x9E3779B1u ^ seed ^ uint32_t(i >> 32) * 0x85EBCA77u;
    h ^= h >> 15;
    h *= 0x2C1B3C6Du;
    h ^= h >> 12;
    p[i] = h;
  }
}

__global__ void empty_kernel(uint32_t* sink) {
  if (threadIdx.x == 0 && blockIdx.x == 0 && sink == nullptr) {
    asm volatile("trap;");
  }
}

template <int U>
__global__ void __launch_bounds__(kThreads) ldg_read_kernel(
    const uint4* __restrict__ src, int64_t n16, uint32_t* sink) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  uint32_t acc = 0;
  for (; i < n16; i += U * stride) {
    // U loads (predicated past the end) issued before any is used.
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t j = i + u * stride;
      v[u] = j < n16 ? __ldg(src + j) : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
  }
  if (acc == kNever) {
    sink[blockIdx.x] = acc;
  }
}

// One 1-D bulk copy global -> shared, completing on `bar` (lane 0 only: the
// operands are uniform, so it is one instruction, not a loop over lanes).
__device__ __forceinline__ void bulk_load_1d(
    uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::
          "r"(dst),
      "l"(src), "r"(bytes), "r"(bar)
      : "memory");
}

struct BulkProbeArgs {
  const unsigned char* src;
  int64_t stages; // of kStageBytes, split over every warp of the grid
  int ring; // slots a warp (1..kBulkMaxRing)
  int copies; // bulk copies a stage: 1, or 3 (4096 + 256 + 256 bytes)
  int fma_per_kb; // synthetic work a KB of the stage
  uint32_t* sink;
};

__global__ void __launch_bounds__(kThreads, 1) bulk_read_kernel(const BulkProbeArgs a) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t warps_total = int64_t(gridDim.x) * kBulkWarps;
  const int64_t gw = int64_t(blockIdx.x) * kBulkWarps + warp;
  const int64_t per = a.stages / warps_total;
  const int64_t rem = a.stages % warps_total;
  const int64_t begin = gw * per + min(gw, rem);
  const int64_t count = per + (gw < rem ? 1 : 0);
  const uint32_t bars = cu::smem_u32(smem) + warp * kBulkMaxRing * 8;
  unsigned char* slots = smem + kBarrierBytes + warp * a.ring * kStageBytes;
  constexpr uint32_t kSmall = 256; // a stage's scales (and biases) of 16 rows

  if (lane == 0) {
    for (int s = 0; s < a.ring; ++s) {
      cu::mbar_init(bars + 8 * s, 1);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncwarp();

  auto issue = [&](int64_t i) {
    const int slot = int(i % a.ring);
    const uint32_t dst = cu::smem_u32(slots + slot * kStageBytes);
    const uint32_t bar = bars + 8 * slot;
    const unsigned char* src = a.src + (begin + i) * kStageBytes;
    cu::mbar_arrive_expect_tx(bar, kStageBytes);
    if (a.copies == 1) {
      bulk_load_1d(dst, src, kStageBytes, bar);
    } else {
      bulk_load_1d(dst, src, kStageBytes - 2 * kSmall, bar);
      bulk_load_1d(dst + kStageBytes - 2 * kSmall, src + kStageBytes - 2 * kSmall, kSmall, bar);
      bulk_load_1d(dst + kStageBytes - kSmall, src + kStageBytes - kSmall, kSmall, bar);
    }
  };
  if (lane == 0) {
    for (int64_t i = 0; i < min(int64_t(a.ring), count); ++i) {
      issue(i);
    }
  }

  uint32_t acc = 0;
  float f0 = float(lane), f1 = f0 + 1.f, f2 = f0 + 2.f, f3 = f0 + 3.f;
  const int fma_rounds = a.fma_per_kb * kStageBytes / 1024 / 4; // 4 FMAs a round
  for (int64_t i = 0; i < count; ++i) {
    const int slot = int(i % a.ring);
    cu::mbar_wait(bars + 8 * slot, uint32_t((i / a.ring) & 1));
    const uint4* p = reinterpret_cast<const uint4*>(slots + slot * kStageBytes);
    for (int j = lane; j < kStageBytes / 16; j += 32) {
      const uint4 v = p[j];
      acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    const float m = __uint_as_float((acc & 0x007FFFFFu) | 0x3F000000u); // in [0.5, 1)
#pragma unroll 4
    for (int r = 0; r < fma_rounds; ++r) {
      f0 = fmaf(f0, m, 1.f);
      f1 = fmaf(f1, m, 1.f);
      f2 = fmaf(f2, m, 1.f);
      f3 = fmaf(f3, m, 1.f);
    }
    // Every lane's shared-memory reads of the slot are ordered before the
    // copy engine's writes into it (as in tc_qmm_bulk).
    if (i + a.ring < count) {
      asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      __syncwarp();
      if (lane == 0) {
        issue(i + a.ring);
      }
    }
  }
  if (acc == kNever && f0 + f1 + f2 + f3 == 1.25f) {
    a.sink[blockIdx.x] = acc;
  }
}

enum class Kind { kEmpty, kLdgWave, kLdgFlat, kBulk };

struct Case {
  std::string name;
  Kind kind;
  int64_t bytes = 0; // bytes the kernel reads (0: none)
  int blocks = 1;
  int threads = kThreads;
  int cluster = 1;
  int smem = 0;
  int ring = 0, copies = 0, fma_per_kb = 0;
};

constexpr int kLdgU = 4; // loads in flight a thread (both read kernels)

struct Device {
  int sms = 0;
  int ldg_blocks_per_sm = 0;
};

std::vector<Case> make_cases(
    const Device& dev, const std::vector<int64_t>& sizes, const std::vector<int64_t>& fma_sizes) {
  std::vector<Case> cs;
  cs.push_back({"empty 1x32", Kind::kEmpty, 0, 1, 32});
  for (int cl : {1, 2, 4, 8}) {
    cs.push_back(
        {"empty 128x512 cluster " + std::to_string(cl), Kind::kEmpty, 0, 128, kThreads, cl});
  }
  for (int cl : {1, 4}) {
    cs.push_back({"empty 128x512 smem 200KB cluster " + std::to_string(cl), Kind::kEmpty, 0, 128,
                  kThreads, cl, 200 * 1024});
  }
  for (int64_t b : sizes) {
    const int64_t n16 = b / 16;
    const std::string sz = std::to_string(b);
    cs.push_back({"ldg wave " + sz, Kind::kLdgWave, n16 * 16, dev.sms * dev.ldg_blocks_per_sm});
    const int64_t per_block = int64_t(kThreads) * kLdgU; // 16-byte chunks
    const int64_t flat_blocks = (n16 + per_block - 1) / per_block;
    cs.push_back({"ldg flat " + sz, Kind::kLdgFlat, n16 * 16, int(flat_blocks)});
    const int64_t stages = (b + kStageBytes - 1) / kStageBytes;
    for (int ring : {2, 3}) {
      Case c{"bulk ring " + std::to_string(ring) + " " + sz, Kind::kBulk, stages * kStageBytes,
             dev.sms};
      c.smem = kBarrierBytes + kBulkWarps * ring * kStageBytes;
      c.ring = ring;
      c.copies = 3;
      cs.push_back(c);
    }
  }
  // Time against synthetic instructions a KB.
  for (int64_t b : fma_sizes) {
    const int64_t stages = (b + kStageBytes - 1) / kStageBytes;
    for (int fma : {32, 64, 96, 128, 160}) {
      Case c{"bulk ring 2 fma " + std::to_string(fma) + " " + std::to_string(b), Kind::kBulk,
             stages * kStageBytes, dev.sms};
      c.smem = kBarrierBytes + kBulkWarps * 2 * kStageBytes;
      c.ring = 2;
      c.copies = 3;
      c.fma_per_kb = fma;
      cs.push_back(c);
    }
  }
  return cs;
}

void launch(const Case& c, const unsigned char* buf, uint32_t* sink, cudaStream_t st) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(c.blocks);
  cfg.blockDim = dim3(c.threads);
  cfg.dynamicSmemBytes = c.smem;
  cfg.stream = st;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = c.cluster;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = c.cluster > 1 ? 1 : 0;
  switch (c.kind) {
    case Kind::kEmpty:
      CK(cudaLaunchKernelEx(&cfg, empty_kernel, sink));
      break;
    case Kind::kLdgWave:
      CK(cudaLaunchKernelEx(&cfg, ldg_read_kernel<kLdgU>, reinterpret_cast<const uint4*>(buf),
                            c.bytes / 16, sink));
      break;
    case Kind::kLdgFlat:
      CK(cudaLaunchKernelEx(&cfg, ldg_read_kernel<kLdgU>, reinterpret_cast<const uint4*>(buf),
                            c.bytes / 16, sink));
      break;
    case Kind::kBulk: {
      BulkProbeArgs a{buf, c.bytes / kStageBytes, c.ring, c.copies, c.fma_per_kb, sink};
      CK(cudaLaunchKernelEx(&cfg, bulk_read_kernel, a));
      break;
    }
  }
  CK(cudaGetLastError());
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kEmpty: return "empty";
    case Kind::kLdgWave: return "ldg_wave";
    case Kind::kLdgFlat: return "ldg_flat";
    case Kind::kBulk: return "bulk";
  }
  return "?";
}

void write_case_json(FILE* f, const Case& c, double us, bool last) {
  std::fprintf(f,
               "  {\"name\": \"%s\", \"kind\": \"%s\", \"bytes\": %lld, \"blocks\": %d, "
               "\"threads\": %d, \"cluster\": %d, \"smem\": %d, \"ring\": %d, \"copies\": %d, "
               "\"fma_per_kb\": %d, \"events_us\": %.4f}%s\n",
               c.name.c_str(), kind_name(c.kind), static_cast<long long>(c.bytes), c.blocks,
               c.threads, c.cluster, c.smem, c.ring, c.copies, c.fma_per_kb, us, last ? "" : ",");
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 3 || (std::strcmp(argv[1], "--events") != 0 && std::strcmp(argv[1], "--ncu") != 0)) {
    std::fprintf(stderr, "usage: %s --events OUT.json | --ncu CASES.json < SIZES\n", argv[0]);
    return 1;
  }
  const bool ncu = std::strcmp(argv[1], "--ncu") == 0;
  // Sizes in bytes on stdin (stream_probe.py passes the benchmark weights'
  // bytes): "S <bytes>" a size for the read kernels, "F <bytes>" one for the
  // synthetic-work sweep of the bulk kernel.
  std::vector<int64_t> sizes, fma_sizes;
  char tag;
  long long v;
  while (std::scanf(" %c %lld", &tag, &v) == 2) {
    if (v >= kStageBytes) {
      (tag == 'F' ? fma_sizes : sizes).push_back(v);
    }
  }
  if (sizes.empty()) {
    std::fprintf(stderr, "no sizes on stdin\n");
    return 1;
  }
  Device dev;
  CK(cudaDeviceGetAttribute(&dev.sms, cudaDevAttrMultiProcessorCount, 0));
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&dev.ldg_blocks_per_sm, ldg_read_kernel<kLdgU>,
                                                   kThreads, 0));
  CK(cudaFuncSetAttribute(empty_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
  CK(cudaFuncSetAttribute(bulk_read_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                          kBarrierBytes + kBulkWarps * kBulkMaxRing * kStageBytes > 227 * 1024
                              ? 227 * 1024
                              : kBarrierBytes + kBulkWarps * kBulkMaxRing * kStageBytes));
  const std::vector<Case> cases = make_cases(dev, sizes, fma_sizes);
  int64_t max_bytes = 0;
  for (const Case& c : cases) {
    max_bytes = std::max(max_bytes, c.bytes);
  }
  constexpr int64_t kFlushBytes = int64_t(512) << 20;
  unsigned char* buf = nullptr;
  unsigned char* flush = nullptr;
  uint32_t* sink = nullptr;
  CK(cudaMalloc(&buf, max_bytes + 2 * kStageBytes));
  CK(cudaMalloc(&flush, kFlushBytes));
  CK(cudaMalloc(&sink, sizeof(uint32_t) * (1 << 20)));
  fill_kernel<<<4 * dev.sms, 256>>>(
      reinterpret_cast<uint32_t*>(buf), (max_bytes + 2 * kStageBytes) / 4, 1u);
  fill_kernel<<<4 * dev.sms, 256>>>(reinterpret_cast<uint32_t*>(flush), kFlushBytes / 4, 2u);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  Case flush_case{"flush", Kind::kLdgWave, kFlushBytes, dev.sms * dev.ldg_blocks_per_sm};

  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  // Warm-up: every case once (module load, first-launch costs) outside the range.
  for (const Case& c : cases) {
    launch(c, buf, sink, st);
  }
  CK(cudaStreamSynchronize(st));

  FILE* f = std::fopen(argv[2], "w");
  if (!f) {
    std::fprintf(stderr, "cannot write %s\n", argv[2]);
    return 1;
  }
  std::fprintf(f, "{\"sms\": %d, \"ldg_blocks_per_sm\": %d, ", dev.sms, dev.ldg_blocks_per_sm);
  if (ncu) {
    // One launch a case, in list order, each synchronized (ncu flushes the
    // caches before each kernel with --cache-control all).
    CK(cudaProfilerStart());
    for (const Case& c : cases) {
      launch(c, buf, sink, st);
      CK(cudaStreamSynchronize(st));
    }
    CK(cudaProfilerStop());
    std::fprintf(f, "\"copy_bandwidth_Bps\": null, \"cases\": [\n");
    for (size_t i = 0; i < cases.size(); ++i) {
      write_case_json(f, cases[i], 0.0, i + 1 == cases.size());
    }
  } else {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    // Copy bandwidth as ncu_qmm_gpu.py measures it (bytes read + written).
    const int64_t half = (max_bytes / 2) & ~int64_t(255);
    std::vector<double> copy_s;
    for (int r = 0; r < 20; ++r) {
      CK(cudaEventRecord(e0, st));
      CK(cudaMemcpyAsync(buf + half, buf, half, cudaMemcpyDeviceToDevice, st));
      CK(cudaEventRecord(e1, st));
      CK(cudaEventSynchronize(e1));
      float ms = 0.f;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      copy_s.push_back(ms * 1e-3);
    }
    std::fprintf(f, "\"copy_bandwidth_Bps\": %.6e, \"cases\": [\n", 2.0 * half / median(copy_s));
    fill_kernel<<<4 * dev.sms, 256, 0, st>>>(reinterpret_cast<uint32_t*>(buf),
                                             (max_bytes + 2 * kStageBytes) / 4, 1u);
    for (size_t i = 0; i < cases.size(); ++i) {
      std::vector<double> us;
      for (int r = 0; r < 15; ++r) {
        launch(flush_case, flush, sink, st); // the L2 holds other (clean) lines now
        CK(cudaEventRecord(e0, st));
        launch(cases[i], buf, sink, st);
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms = 0.f;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        us.push_back(ms * 1e3);
      }
      write_case_json(f, cases[i], median(us), i + 1 == cases.size());
    }
  }
  std::fprintf(f, "]}\n");
  std::fclose(f);
  CK(cudaDeviceSynchronize());
  std::printf("stream_probe: %zu cases written to %s\n", cases.size(), argv[2]);
  return 0;
}
