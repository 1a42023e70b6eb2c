#include "cpu/thread_pool.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#ifdef __linux__
#include <sched.h>
#endif

namespace mlx_kernels::cpu {

namespace {

int detect_threads() {
  if (const char* env = std::getenv("MLX_KERNELS_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) {
      return n;
    }
  }
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) {
      return n;
    }
  }
#endif
  unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

// About 100 us of polling at ~3 GHz.
constexpr int kSpinIterations = 20000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

class ThreadPool {
 public:
  explicit ThreadPool(int threads) : size_(threads) {
    for (int i = 1; i < threads; ++i) {
      workers_.emplace_back([this] { worker_loop(); });
    }
  }

  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) {
      t.join();
    }
  }

  int size() const {
    return size_;
  }

  void run(int num_tasks, const std::function<void(int)>& task) {
    if (num_tasks <= 0) {
      return;
    }
    if (num_tasks == 1 || workers_.empty()) {
      for (int i = 0; i < num_tasks; ++i) {
        task(i);
      }
      return;
    }
    std::lock_guard<std::mutex> serial(run_mutex_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &task;
      num_tasks_ = num_tasks;
      next_.store(0);
      done_ = 0;
      ++generation_;
    }
    wake_.notify_all();
    int ran = drain(task, num_tasks);
    std::unique_lock<std::mutex> lock(mutex_);
    done_ += ran;
    // Wait for every task, and for every worker that joined this round to
    // leave it, so that no worker holds `task` once we return.
    finished_.wait(lock, [&] { return done_ == num_tasks_ && active_ == 0; });
    task_ = nullptr;
  }

 private:
  // Claims and runs tasks until none are left; returns how many it ran.
  int drain(const std::function<void(int)>& task, int num_tasks) {
    int ran = 0;
    for (;;) {
      int i = next_.fetch_add(1);
      if (i >= num_tasks) {
        return ran;
      }
      task(i);
      ++ran;
    }
  }

  void worker_loop() {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* task;
      int num_tasks;
      // Kernels come in bursts (one per op of a model): spin briefly before
      // sleeping, so that a worker wakes in well under the ~50 us a futex
      // wake-up costs.
      for (int spin = 0; spin < kSpinIterations && generation_.load() == seen; ++spin) {
        cpu_relax();
      }
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_.load() != seen; });
        if (stop_) {
          return;
        }
        seen = generation_;
        task = task_;
        num_tasks = num_tasks_;
        if (task == nullptr) {
          continue; // woke after that round had already finished
        }
        ++active_;
      }
      int ran = drain(*task, num_tasks);
      std::lock_guard<std::mutex> lock(mutex_);
      done_ += ran;
      --active_;
      if (done_ == num_tasks_ && active_ == 0) {
        finished_.notify_one();
      }
    }
  }

  int size_;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable finished_;
  const std::function<void(int)>* task_ = nullptr;
  int num_tasks_ = 0;
  std::atomic<int> next_{0};
  int done_ = 0;
  int active_ = 0;
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
};

ThreadPool& pool() {
  // Leaked on purpose: joining threads from a static destructor at interpreter
  // exit can deadlock.
  static ThreadPool* p = new ThreadPool(detect_threads());
  return *p;
}

} // namespace

int num_threads() {
  return pool().size();
}

void parallel_for(int num_tasks, const std::function<void(int)>& task) {
  pool().run(num_tasks, task);
}

} // namespace mlx_kernels::cpu
