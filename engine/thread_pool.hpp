#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace baton::engine {

/// A fixed set of worker threads that run one job at a time, fork-join style. The thread
/// calling run() takes part as participant 0, so a pool of size 1 owns no threads.
/// run() must be called from one thread at a time (the engine's caller). An engine step runs
/// dozens of jobs back to back, so between jobs the workers (and the caller awaiting them)
/// spin for up to spin_rounds pauses, some tens of microseconds, before sleeping: a futex
/// wake costs about as much as a small job.
class thread_pool {
 public:
  /// `threads` participants in total (at least 1), including the caller of run().
  explicit thread_pool(std::size_t threads);
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool();

  [[nodiscard]] std::size_t size() const { return workers_.size() + 1; }

  /// Calls job(i) once for each participant i in [0, size()) and returns when all are
  /// done. `job` must not call run().
  void run(const std::function<void(std::size_t)>& job);

 private:
  static constexpr int spin_rounds = 2048;

  void work(std::size_t index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable start_;
  std::condition_variable done_;
  const std::function<void(std::size_t)>* job_ = nullptr;  ///< guarded by mutex_
  /// Written under mutex_; read without it only to decide whether to stop spinning.
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<std::size_t> pending_{0};  ///< workers still running the current job
  std::size_t sleeping_ = 0;             ///< workers waiting on start_ (under mutex_)
  bool waiting_ = false;                 ///< the caller waits on done_ (under mutex_)
  bool stopping_ = false;                ///< under mutex_
};

}  // namespace baton::engine
