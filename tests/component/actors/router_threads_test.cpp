// The router's locked core on real threads, as in a node: client threads start and cancel
// requests through the gateway (a front door's I/O threads), a decode worker's frames come
// in on another thread through the node's fast path (the transport's progress thread),
// and the router actor runs on CAF's workers. Frames leave through a recording sink.
#include "actors/router/router_actor.hpp"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>
#include <caf/all.hpp>

#include "runtime/frame_sink.hpp"

namespace baton::actors {
namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t decode_incarnation = 5;
constexpr std::uint32_t tokens_per_request = 6;

/// Hands every frame the router posts to the test's decode worker, decoded.
class queue_sink final : public runtime::frame_sink {
 public:
  void attach(const std::string&, const std::string&, caf::actor) override {}
  void detach(const std::string&, const caf::actor&) override {}
  void post(const std::string& node, wire::encoded_frame frame,
            std::chrono::steady_clock::time_point) override {
    auto decoded = wire::decoder{}.decode(frame.bytes());
    EXPECT_TRUE(decoded) << decoded.error().message;
    if (!decoded) return;
    {
      std::lock_guard lock(mutex_);
      frames_.emplace_back(node, std::move(*decoded));
    }
    changed_.notify_all();
  }

  /// The next frame posted, or nullopt after 100 ms without one.
  std::optional<std::pair<std::string, wire::frame>> next() {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, 100ms, [&] { return !frames_.empty(); })) return std::nullopt;
    auto f = std::move(frames_.front());
    frames_.pop_front();
    return f;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::pair<std::string, wire::frame>> frames_;
};

/// One request's client: records what the router sends.
class recording_stream final : public frontend::response_stream {
 public:
  explicit recording_stream(std::uint64_t id) : id_(id) {}
  [[nodiscard]] std::uint64_t id() const noexcept override { return id_; }
  [[nodiscard]] std::uint64_t client_tag() const noexcept override { return id_; }
  [[nodiscard]] std::size_t queued_bytes() const noexcept override { return 0; }
  [[nodiscard]] bool open() const noexcept override {
    std::lock_guard lock(mutex_);
    return !ended_;
  }
  bool send(frontend::response r) override {
    {
      std::lock_guard lock(mutex_);
      if (ended_) return false;
      ended_ =
          std::holds_alternative<wire::finished>(r) || std::holds_alternative<wire::rejected>(r);
      got_.push_back(std::move(r));
    }
    changed_.notify_all();
    return true;
  }
  /// Ends the request from the client's side, as a server does before it cancels.
  void close() {
    std::lock_guard lock(mutex_);
    ended_ = true;
  }
  /// Waits (10 s at most) until the request ended; what the router sent.
  std::vector<frontend::response> wait_end() {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, 10s, [&] { return ended_; });
    return got_;
  }

 private:
  std::uint64_t id_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool ended_ = false;
  std::vector<frontend::response> got_;
};

class RouterThreads : public ::testing::Test {
 protected:
  RouterThreads() : system_(configure(config_)) {}

  static caf::actor_system_config& configure(caf::actor_system_config& config) {
    config.set("scheduler.max-threads", 2);
    config.set("logger.verbosity", caf::atom("quiet"));
    return config;
  }

  void SetUp() override {
    auto tok = engine::tokenizer::load(std::string(BATON_SHARED_MODELS_DIR) + "/tok512.bin", 512);
    ASSERT_TRUE(tok) << tok.error().message;
    tok_.emplace(std::move(*tok));
    ctx_.emplace("r", 1, system_, sink_, metrics_);
    ctx_->update_member({"d",
                         decode_incarnation,
                         wire::member_state::alive,
                         wire::node_kind::cpu,
                         "cpu",
                         {wire::role::decode},
                         "fabric-d",
                         ""});
    router_options options;
    options.seq_len = 256;
    options.kv_blocks["d"] = 1024;
    options.config.when_no_prefill = no_prefill_policy::prefill_on_decode;
    options.entry = entry_;
    router_ = spawn_router(*ctx_, *tok_, options);
    // Running once it has registered for the front doors.
    for (int i = 0; i < 1000 && !registered(); ++i) std::this_thread::sleep_for(10ms);
    ASSERT_TRUE(registered());
    worker_ = std::thread([this] { decode_worker(); });
  }

  void TearDown() override {
    stopping_ = true;
    if (worker_.joinable()) worker_.join();
    caf::anon_send_exit(router_, caf::exit_reason::user_shutdown);
    // The router's exit hook uses the node context and unregisters last: wait for it, since
    // await_all_actors_done() can return before an actor's attachables have run, and the
    // context goes before the actor system.
    for (int i = 0; i < 1000 && registered(); ++i) std::this_thread::sleep_for(10ms);
    if (ctx_) (void)ctx_->shutdown();  // the bridge to d
    system_.await_all_actors_done();
  }

  bool registered() {
    std::lock_guard lock(entry_->mutex);
    return entry_->core != nullptr;
  }

  /// Node d's decode actor, on the thread that receives d's frames: answers each admit
  /// with its tokens in three batches, the last one ending the attempt.
  void decode_worker() {
    std::uint64_t message_id = 0;
    while (!stopping_) {
      auto posted = sink_.next();
      if (!posted) continue;
      const auto* admit = std::get_if<wire::admit>(&posted->second.body);
      if (posted->first != "d" || admit == nullptr) continue;  // credit, cancels, windows
      auto position = static_cast<std::uint32_t>(admit->tokens.size());
      for (std::uint32_t batch = 0; batch < 3; ++batch) {
        wire::token_batch m{admit->request, admit->attempt, position, {300, 301}, {}};
        position += 2;
        if (batch == 2) m.finish = wire::finish_reason::length;
        wire::frame f;
        f.source = {"d", decode_name};
        f.target = {"r", router_name};
        f.sender_incarnation = decode_incarnation;
        f.message_id = ++message_id;
        f.body = std::move(m);
        auto encoded = wire::encode(f);
        ASSERT_TRUE(encoded);
        EXPECT_TRUE(ctx_->take(encoded->bytes(), std::chrono::steady_clock::now()))
            << "the router's fast path takes its tokens";
      }
    }
  }

  caf::actor_system_config config_;
  caf::actor_system system_;
  runtime::metrics_registry metrics_;
  queue_sink sink_;
  std::optional<engine::tokenizer> tok_;
  std::optional<runtime::node_context> ctx_;
  std::shared_ptr<router_entry> entry_ = std::make_shared<router_entry>();
  caf::actor router_;
  std::atomic<bool> stopping_{false};
  std::thread worker_;
};

TEST_F(RouterThreads, RequestsAndCancelsFromManyThreadsEachEndOnce) {
  router_gateway gateway(entry_);
  constexpr std::uint64_t clients = 3;
  constexpr std::uint64_t per_client = 8;
  std::vector<std::shared_ptr<recording_stream>> streams;
  for (std::uint64_t i = 0; i < clients * per_client; ++i) {
    streams.push_back(std::make_shared<recording_stream>(i + 1));
  }
  // Client c starts its requests; every third one it cancels at once, while its tokens
  // may already be coming in on the worker's thread.
  std::vector<std::thread> threads;
  for (std::uint64_t c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      for (std::uint64_t i = c * per_client; i < (c + 1) * per_client; ++i) {
        wire::generate_request request;
        request.client_tag = i + 1;
        request.prompt = "Once upon a time";
        request.max_tokens = tokens_per_request;
        gateway.start(request, streams[i]);
        if (i % 3 == 0) {
          streams[i]->close();
          gateway.cancel(*streams[i], frontend::cancel_reason::client_cancelled);
        }
      }
    });
  }
  for (auto& t : threads) t.join();

  for (std::uint64_t i = 0; i < streams.size(); ++i) {
    if (i % 3 == 0) continue;  // cancelled: whatever it got before the cancel
    const auto got = streams[i]->wait_end();
    ASSERT_GE(got.size(), 2u) << "request " << i;
    EXPECT_TRUE(std::holds_alternative<wire::accepted>(got.front())) << "request " << i;
    std::size_t tokens = 0;
    for (std::size_t k = 1; k + 1 < got.size(); ++k) {
      const auto* chunk = std::get_if<wire::token_chunk>(&got[k]);
      ASSERT_NE(chunk, nullptr) << "request " << i << " message " << k;
      tokens += chunk->tokens.size();
    }
    const auto* finished = std::get_if<wire::finished>(&got.back());
    ASSERT_NE(finished, nullptr) << "request " << i;
    EXPECT_EQ(finished->reason, wire::finish_reason::length) << "request " << i;
    EXPECT_EQ(finished->completion_tokens, tokens_per_request) << "request " << i;
    EXPECT_EQ(tokens, tokens_per_request) << "request " << i;
  }
  // Every request ended, cancelled ones included: none is left in flight.
  auto& inflight = metrics_.get_gauge("baton_router_requests_inflight", "Requests admitted");
  for (int i = 0; i < 500 && inflight.value() != 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(inflight.value(), 0);
}

}  // namespace
}  // namespace baton::actors
