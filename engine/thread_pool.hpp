#pragma once

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
/// run() must be called from one thread at a time (the engine's caller).
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
  void work(std::size_t index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable start_;
  std::condition_variable done_;
  const std::function<void(std::size_t)>* job_ = nullptr;
  std::uint64_t generation_ = 0;
  std::size_t pending_ = 0;
  bool stopping_ = false;
};

}  // namespace baton::engine
