#pragma once

// A generate_handler for server tests: each request runs the derived class's script on its
// own thread, and the requests and cancels the server passed on are recorded.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "frontend/native_server.hpp"

namespace baton::frontend::testing {

class threaded_handler : public generate_handler {
 public:
  /// Derived classes call stop() in their destructor: the scripts use their members.
  ~threaded_handler() override { stop(); }

  void start(const wire::generate_request& request,
             std::shared_ptr<response_stream> stream) override {
    std::lock_guard lock(mutex_);
    requests_.push_back(request);
    threads_.emplace_back([this, request, stream] { run(request, *stream); });
  }

  void cancel(const response_stream& stream, cancel_reason reason) override {
    {
      std::lock_guard lock(mutex_);
      cancels_.emplace_back(stream.id(), reason);
    }
    changed_.notify_all();
  }

  /// Waits (10 s at most) until `n` cancels arrived; their reasons, in order.
  std::vector<cancel_reason> wait_for_cancels(std::size_t n) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, std::chrono::seconds(10), [&] { return cancels_.size() >= n; });
    std::vector<cancel_reason> out;
    for (const auto& c : cancels_) out.push_back(c.second);
    return out;
  }

  std::vector<wire::generate_request> requests() {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 protected:
  /// One request's script, on its own thread.
  virtual void run(const wire::generate_request& request, response_stream& stream) = 0;

  /// Ends every script: wakes the waiting ones and joins the threads. Idempotent.
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mutex_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

  /// Waits up to `timeout` for stop() or `done` (checked again on every cancel); true
  /// when the handler is stopping.
  bool wait_stopping(std::chrono::milliseconds timeout, const std::function<bool()>& done = {}) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return stopping_ || (done && done()); });
    return stopping_;
  }

  [[nodiscard]] bool stopping() {
    std::lock_guard lock(mutex_);
    return stopping_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
  std::vector<wire::generate_request> requests_;
  std::vector<std::pair<std::uint64_t, cancel_reason>> cancels_;
};

}  // namespace baton::frontend::testing
