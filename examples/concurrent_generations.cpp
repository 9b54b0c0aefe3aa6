// Runs many generations at once over one client (one connection per router) and cancels
// half of them as soon as their first token arrives. The others are greedy generations of
// the same prompt, so they must all produce the same text whatever ran beside them: it is
// printed once. Exits non-zero if any of them failed or differed.
//   concurrent_generations [COUNT] [PROMPT] [ROUTER...]   (routers: cluster.toml's two)
#include <client/router_client.hpp>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

namespace client = baton::client;

namespace {

/// One request's text and end, filled on the client's I/O thread.
struct generation {
  std::string text;
  bool first_token = false;
  bool ended = false;
  bool cancel_sent = false;
  client::request_handle handle;
  baton::expected<client::generate_result> result = baton::fail(baton::errc::failed, "not ended");
};

}  // namespace

int main(int argc, char** argv) {
  const int count = argc > 1 ? std::atoi(argv[1]) : 8;
  client::client_options options;
  for (int i = 3; i < argc; ++i) options.routers.emplace_back(argv[i]);
  if (options.routers.empty()) options.routers = {"127.0.0.1:7000", "127.0.0.1:7001"};
  auto connected = client::router_client::connect(options);
  if (!connected || count < 1) {
    std::fprintf(stderr, "cannot connect: %s\n",
                 connected ? "COUNT must be positive" : connected.error().to_string().c_str());
    return 1;
  }
  auto& pool = **connected;

  std::mutex mutex;
  std::condition_variable changed;
  std::vector<generation> runs(static_cast<std::size_t>(count));
  baton::wire::generate_request request;
  request.prompt = argc > 2 ? argv[2] : "Once upon a time";
  request.max_positions = 100;  // greedy (temperature 0): what llama2.c prints
  for (auto& run : runs) {
    auto on_event = [&mutex, &changed, &run](const client::client_event& event) {
      std::lock_guard lock(mutex);
      if (const auto* accepted = std::get_if<baton::wire::accepted>(&event)) {
        run.text += accepted->prompt_text;
      } else {
        run.text += std::get<baton::wire::token_chunk>(event).text;
        run.first_token = true;
      }
      changed.notify_all();
      return true;
    };
    auto on_done = [&mutex, &changed, &run](baton::expected<client::generate_result> result) {
      std::lock_guard lock(mutex);
      run.result = std::move(result);
      run.ended = true;
      changed.notify_all();
    };
    auto handle = pool.start(request, on_event, on_done);
    std::lock_guard lock(mutex);
    run.handle = handle;
  }

  // Every odd request is cancelled from this thread once its first token is in.
  std::unique_lock lock(mutex);
  for (;;) {
    bool all_ended = true;
    for (std::size_t i = 0; i < runs.size(); ++i) {
      auto& run = runs[i];
      if (i % 2 == 1 && run.first_token && !run.cancel_sent) {
        run.handle.cancel();
        run.cancel_sent = true;
      }
      all_ended = all_ended && run.ended;
    }
    if (all_ended) break;
    changed.wait(lock);
  }

  int failures = 0;
  const std::string* reference = nullptr;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const auto& run = runs[i];
    if (!run.result) {
      std::fprintf(stderr, "request %zu failed: %s\n", i, run.result.error().to_string().c_str());
      ++failures;
      continue;
    }
    const bool cancelled = run.result->reason == baton::wire::finish_reason::cancelled;
    std::fprintf(stderr, "request %zu: %s after %u tokens via %s\n", i,
                 cancelled ? "cancelled" : "finished", run.result->completion_tokens,
                 run.result->router.c_str());
    if (i % 2 == 1) continue;  // cancelled, or finished before its cancel arrived
    if (cancelled) {
      std::fprintf(stderr, "request %zu was cancelled, and nobody cancelled it\n", i);
      ++failures;
    } else if (reference == nullptr) {
      reference = &run.text;
    } else if (run.text != *reference) {
      std::fprintf(stderr, "request %zu's text differs from request 0's\n", i);
      ++failures;
    }
  }
  for (const auto& router : pool.routers()) {
    std::fprintf(stderr, "router %s: %s, %u failures\n", router.address.c_str(),
                 router.now == client::router_health::state::up ? "up" : "not up", router.failures);
  }
  if (reference != nullptr) std::printf("%s\n", reference->c_str());
  return failures == 0 ? 0 : 1;
}
