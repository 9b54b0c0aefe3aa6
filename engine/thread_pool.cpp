#include "engine/thread_pool.hpp"

#include <immintrin.h>

namespace baton::engine {
namespace {

/// A spin-wait hint to the CPU.
void spin_pause() {
  _mm_pause();
}

}  // namespace

thread_pool::thread_pool(std::size_t threads) {
  const std::size_t extra = threads > 1 ? threads - 1 : 0;
  workers_.reserve(extra);
  for (std::size_t i = 0; i < extra; ++i) workers_.emplace_back([this, i] { work(i + 1); });
}

thread_pool::~thread_pool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  start_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void thread_pool::run(const std::function<void(std::size_t)>& job) {
  if (workers_.empty()) {
    job(0);
    return;
  }
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    job_ = &job;
    pending_.store(workers_.size(), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    wake = sleeping_ > 0;
  }
  if (wake) start_.notify_all();
  job(0);
  for (int i = 0; i < spin_rounds && pending_.load(std::memory_order_acquire) != 0; ++i) {
    spin_pause();
  }
  std::unique_lock lock(mutex_);
  waiting_ = true;
  done_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
  waiting_ = false;
  job_ = nullptr;
}

void thread_pool::work(std::size_t index) {
  std::uint64_t seen = 0;
  while (true) {
    for (int i = 0; i < spin_rounds && generation_.load(std::memory_order_acquire) == seen; ++i) {
      spin_pause();
    }
    const std::function<void(std::size_t)>* job = nullptr;
    {
      std::unique_lock lock(mutex_);
      ++sleeping_;
      start_.wait(lock,
                  [&] { return stopping_ || generation_.load(std::memory_order_relaxed) != seen; });
      --sleeping_;
      if (stopping_) return;
      seen = generation_.load(std::memory_order_relaxed);
      job = job_;
    }
    (*job)(index);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // Under the mutex, so a caller between its predicate check and its sleep is not missed.
      std::lock_guard lock(mutex_);
      if (waiting_) done_.notify_one();
    }
  }
}

}  // namespace baton::engine
