// The native client protocol's two ends over 127.0.0.1: the router client library against
// the router's native port (frontend/native_server), with a scripted generate_handler
// standing in for the router.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "client/router_client.hpp"
#include "frontend/native_server.hpp"
#include "schemas/client_codec.hpp"
#include "tests/component/frontend/threaded_handler.hpp"

#include <utility>  // before Asio (Boost 1.74 + C++20)

#include <boost/asio.hpp>

namespace baton::client {
namespace {

using frontend::cancel_reason;
using frontend::generate_handler;
using frontend::native_server;
using frontend::response_stream;
using frontend::server_options;

using namespace std::chrono_literals;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// ---- a scripted router -------------------------------------------------------------

/// Streams a script per request on its own thread. The prompt picks the script:
///   "reject"  rejected{overloaded} at once
///   "hang"    accepted, then nothing until the server cancels
///   "flood"   accepted, then large chunks until send() fails
///   other     accepted, 5 chunks of 2 tokens, finished{length}
class scripted_handler final : public frontend::testing::threaded_handler {
 public:
  ~scripted_handler() override { stop(); }

  std::size_t max_queued_seen() const { return max_queued_.load(); }
  bool flood_stopped() const { return flood_stopped_.load(); }

 private:
  void run(const wire::generate_request& request, response_stream& stream) override {
    if (request.prompt == "reject") {
      stream.send(wire::rejected{0, errc::overloaded, "all decode nodes are full"});
      return;
    }
    stream.send(wire::accepted{0, wire::request_id{stream.id()},
                               request.has_seed ? request.params.seed : 1234, 3, request.prompt,
                               "prefill-0", "decode-0", "disaggregated"});
    if (request.prompt == "hang") {
      (void)wait_stopping(10s, [&] { return !stream.open(); });
      return;
    }
    if (request.prompt == "flood") {
      const wire::token_chunk big{0, 0, std::vector<std::uint32_t>(1000, 7),
                                  std::string(2000, 'x')};
      for (int i = 0; i < 100000 && !stopping(); ++i) {
        auto chunk = big;
        chunk.first_position = static_cast<std::uint32_t>(i);
        if (!stream.send(chunk)) break;
        max_queued_ = std::max(max_queued_.load(), stream.queued_bytes());
      }
      flood_stopped_ = true;
      return;
    }
    std::uint32_t position = 3;
    for (std::uint32_t i = 0; i < 5; ++i) {
      std::this_thread::sleep_for(2ms);
      stream.send(wire::token_chunk{0, position, {10 + 2 * i, 11 + 2 * i}, fmt::format("<{}>", i)});
      position += 2;
    }
    stream.send(wire::finished{0, wire::finish_reason::length, 3, 10, 42});
  }

  std::atomic<std::size_t> max_queued_{0};
  std::atomic<bool> flood_stopped_{false};
};

std::unique_ptr<native_server> serve(generate_handler& handler, server_options options = {}) {
  auto server = native_server::start(std::move(options), handler);
  EXPECT_TRUE(server) << server.error().to_string();
  return std::move(*server);
}

std::string address_of(const native_server& server) {
  return fmt::format("127.0.0.1:{}", server.local_port());
}

std::unique_ptr<router_client> client_for(std::vector<std::string> routers) {
  client_options options;
  options.routers = std::move(routers);
  options.cancel_grace = 2s;
  options.resume_wait = 500ms;
  auto client = router_client::connect(std::move(options));
  EXPECT_TRUE(client) << client.error().to_string();
  return client ? std::move(*client) : nullptr;
}

wire::generate_request request_for(std::string prompt, std::uint32_t timeout_ms = 0) {
  wire::generate_request r;
  r.prompt = std::move(prompt);
  r.max_tokens = 16;
  r.params = {0.0f, 1.0f, 0};
  r.timeout_ms = timeout_ms;
  return r;
}

/// A raw connection, for what a well-behaved client never sends.
struct raw_connection {
  asio::io_context io;
  tcp::socket socket{io};

  /// From `source` (any address of 127.0.0.0/8 is this host's).
  explicit raw_connection(std::uint16_t port, const char* source = "127.0.0.1") {
    socket.open(tcp::v4());
    socket.bind(tcp::endpoint(asio::ip::make_address(source), 0));
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  }
  void send(const wire::client_message& m) {
    auto frame = wire::encode_client_frame(m);
    ASSERT_TRUE(frame);
    asio::write(socket, asio::buffer(*frame));
  }
  /// The next message, or an error at EOF.
  expected<wire::client_message> receive() {
    std::array<std::byte, 4> prefix{};
    boost::system::error_code ec;
    asio::read(socket, asio::buffer(prefix), ec);
    if (ec) return fail(errc::disconnected, ec.message());
    auto length = wire::client_frame_length(prefix);
    if (!length) return tl::unexpected(length.error());
    std::vector<std::byte> body(*length);
    asio::read(socket, asio::buffer(body), ec);
    if (ec) return fail(errc::disconnected, ec.message());
    return wire::decode_client_message(body);
  }
};

// ---- server and client -------------------------------------------------------------

TEST(RouterClient, StreamsTokensInOrderAndFinishes) {
  scripted_handler handler;
  auto server = serve(handler);
  auto client = client_for({address_of(*server)});
  ASSERT_TRUE(client);
  std::vector<std::string> seen;
  std::uint32_t next_position = 3;
  auto req = request_for("Once");
  req.params.seed = 77;
  req.has_seed = true;
  auto result = client->generate(req, [&](const client_event& e) {
    if (auto* a = std::get_if<wire::accepted>(&e)) {
      seen.push_back("accepted:" + a->prompt_text);
    } else {
      const auto& chunk = std::get<wire::token_chunk>(e);
      EXPECT_EQ(chunk.first_position, next_position);
      next_position += static_cast<std::uint32_t>(chunk.tokens.size());
      seen.push_back(chunk.text);
    }
    return true;
  });
  ASSERT_TRUE(result) << result.error().to_string();
  EXPECT_EQ(seen, (std::vector<std::string>{"accepted:Once", "<0>", "<1>", "<2>", "<3>", "<4>"}));
  EXPECT_EQ(result->reason, wire::finish_reason::length);
  EXPECT_EQ(result->prompt_tokens, 3u);
  EXPECT_EQ(result->completion_tokens, 10u);
  EXPECT_EQ(result->router_us, 42u);  // the router's own time, passed through
  EXPECT_EQ(result->seed, 77u);
  EXPECT_EQ(result->placement, "disaggregated");
  EXPECT_EQ(result->decode_node, "decode-0");
  EXPECT_EQ(result->router, address_of(*server));
  // The server filled in its default deadline for a request without one.
  ASSERT_EQ(handler.requests().size(), 1u);
  EXPECT_EQ(handler.requests()[0].timeout_ms, server_options{}.default_timeout_ms);
  // The connection is reused for the next request.
  auto again = client->generate(request_for("Twice"), [](const client_event&) { return true; });
  ASSERT_TRUE(again) << again.error().to_string();
  EXPECT_EQ(server->stats().connections_accepted, 1u);
  EXPECT_EQ(server->stats().requests_started, 2u);
}

TEST(RouterClient, RejectionFailsWithTheRoutersCode) {
  scripted_handler handler;
  auto server = serve(handler);
  auto client = client_for({address_of(*server)});
  ASSERT_TRUE(client);
  auto result = client->generate(request_for("reject"), [](const client_event&) { return true; });
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, errc::overloaded);
  EXPECT_NE(result.error().message.find("all decode nodes are full"), std::string::npos);
}

TEST(RouterClient, CancelFromAnotherThreadReachesTheHandler) {
  scripted_handler handler;
  auto server = serve(handler);
  auto client = client_for({address_of(*server)});
  ASSERT_TRUE(client);
  std::thread canceller;
  auto result = client->generate(request_for("hang"), [&](const client_event& e) {
    if (std::holds_alternative<wire::accepted>(e))
      canceller = std::thread([&] { client->cancel(); });
    return true;
  });
  canceller.join();
  ASSERT_TRUE(result) << result.error().to_string();
  EXPECT_EQ(result->reason, wire::finish_reason::cancelled);
  EXPECT_EQ(result->prompt_tokens, 3u);
  EXPECT_EQ(handler.wait_for_cancels(1),
            std::vector<cancel_reason>{cancel_reason::client_cancelled});
}

TEST(RouterClient, CallbackReturningFalseCancels) {
  scripted_handler handler;
  auto server = serve(handler);
  auto client = client_for({address_of(*server)});
  ASSERT_TRUE(client);
  auto result = client->generate(request_for("hang"), [](const client_event&) { return false; });
  ASSERT_TRUE(result) << result.error().to_string();
  EXPECT_EQ(result->reason, wire::finish_reason::cancelled);
  EXPECT_EQ(handler.wait_for_cancels(1),
            std::vector<cancel_reason>{cancel_reason::client_cancelled});
  // The connection stays usable.
  auto next = client->generate(request_for("Once"), [](const client_event&) { return true; });
  ASSERT_TRUE(next) << next.error().to_string();
  EXPECT_EQ(next->completion_tokens, 10u);
  EXPECT_EQ(server->stats().connections_accepted, 1u);
}

TEST(RouterClient, DeadlinePassedIsTimedOutAndCancels) {
  scripted_handler handler;
  auto server = serve(handler);
  auto client = client_for({address_of(*server)});
  ASSERT_TRUE(client);
  const auto begin = std::chrono::steady_clock::now();
  auto result =
      client->generate(request_for("hang", 200), [](const client_event&) { return true; });
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, errc::timed_out) << result.error().to_string();
  EXPECT_GE(std::chrono::steady_clock::now() - begin, 200ms);
  EXPECT_EQ(handler.wait_for_cancels(1),
            std::vector<cancel_reason>{cancel_reason::client_cancelled});
  EXPECT_EQ(handler.requests().at(0).timeout_ms, 200u);
}

TEST(RouterClient, RouterGoingAwayMidStreamIsDisconnected) {
  scripted_handler handler;
  auto server = serve(handler);
  auto client = client_for({address_of(*server)});
  ASSERT_TRUE(client);
  std::thread stopper;
  auto result = client->generate(request_for("hang"), [&](const client_event& e) {
    if (std::holds_alternative<wire::accepted>(e)) stopper = std::thread([&] { server.reset(); });
    return true;
  });
  stopper.join();
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, errc::disconnected) << result.error().to_string();
  EXPECT_NE(result.error().message.find("mid-stream"), std::string::npos);
  EXPECT_EQ(handler.wait_for_cancels(1),
            std::vector<cancel_reason>{cancel_reason::server_stopping});
}

TEST(RouterClient, FailsOverToTheNextRouter) {
  // A port nobody listens on: bound and released a moment ago.
  std::uint16_t dead_port = 0;
  {
    asio::io_context io;
    tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    dead_port = a.local_endpoint().port();
  }
  scripted_handler handler;
  auto server = serve(handler);
  const auto dead = fmt::format("127.0.0.1:{}", dead_port);
  auto client = client_for({dead, address_of(*server)});
  ASSERT_TRUE(client);
  EXPECT_EQ(client->connected_router(), address_of(*server));
  auto result = client->generate(request_for("Once"), [](const client_event&) { return true; });
  ASSERT_TRUE(result) << result.error().to_string();
  EXPECT_EQ(result->router, address_of(*server));

  // The serving router goes away between requests; a second one takes over.
  scripted_handler other_handler;
  auto other = serve(other_handler);
  auto both = client_for({address_of(*server), address_of(*other)});
  ASSERT_TRUE(both);
  server.reset();
  auto moved = both->generate(request_for("Once"), [](const client_event&) { return true; });
  ASSERT_TRUE(moved) << moved.error().to_string();
  EXPECT_EQ(moved->router, address_of(*other));
}

TEST(RouterClient, NoRouterAnsweringIsDisconnected) {
  std::uint16_t dead_port = 0;
  {
    asio::io_context io;
    tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    dead_port = a.local_endpoint().port();
  }
  client_options options;
  options.routers = {fmt::format("127.0.0.1:{}", dead_port)};
  auto client = router_client::connect(options);
  ASSERT_FALSE(client);
  EXPECT_EQ(client.error().code, errc::disconnected);
  options.routers = {"no-port"};
  auto bad = router_client::connect(options);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
}

// ---- many requests, one client ------------------------------------------------------

/// What start()'s callbacks saw, per request tag; waits for the requests to end.
class outcomes {
 public:
  done_callback on_done(std::uint64_t key) {
    return [this, key](expected<generate_result> r) {
      std::lock_guard lock(mutex_);  // notified under it: a waiter may destroy this next
      results_.emplace(key, std::move(r));
      changed_.notify_all();
    };
  }
  event_callback on_event(std::uint64_t key) {
    return [this, key](const client_event& e) {
      std::lock_guard lock(mutex_);
      auto& seen = events_[key];
      if (std::holds_alternative<wire::accepted>(e)) {
        seen.push_back("accepted");
      } else {
        seen.push_back(std::get<wire::token_chunk>(e).text);
      }
      changed_.notify_all();
      return true;
    };
  }
  /// Waits (10 s at most) until `n` requests ended; true if they did.
  bool wait_done(std::size_t n) {
    return wait([&] { return results_.size() >= n; });
  }
  /// Waits until `n` requests were accepted.
  bool wait_accepted(std::size_t n) {
    return wait([&] {
      std::size_t accepted = 0;
      for (const auto& [key, seen] : events_) accepted += seen.empty() ? 0 : 1;
      return accepted >= n;
    });
  }
  expected<generate_result> result(std::uint64_t key) {
    std::lock_guard lock(mutex_);
    return results_.at(key);
  }
  std::vector<std::string> events(std::uint64_t key) {
    std::lock_guard lock(mutex_);
    return events_[key];
  }

 private:
  bool wait(const std::function<bool()>& done) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, 10s, done);
  }
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::uint64_t, expected<generate_result>> results_;
  std::map<std::uint64_t, std::vector<std::string>> events_;
};

/// Waits (10 s at most) until every router of `client` is up.
bool all_up(const router_client& client) {
  for (int i = 0; i < 1000; ++i) {
    const auto routers = client.routers();
    if (std::all_of(routers.begin(), routers.end(),
                    [](const router_health& r) { return r.now == router_health::state::up; }))
      return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

TEST(RouterClient, ManyConcurrentRequestsShareOneConnection) {
  scripted_handler handler;
  auto server = serve(handler);
  auto client = client_for({address_of(*server)});
  ASSERT_TRUE(client);
  outcomes seen;
  constexpr std::uint64_t n = 32;
  for (std::uint64_t i = 0; i < n; ++i) {
    (void)client->start(request_for(fmt::format("prompt {}", i)), seen.on_event(i),
                        seen.on_done(i));
  }
  ASSERT_TRUE(seen.wait_done(n));
  for (std::uint64_t i = 0; i < n; ++i) {
    auto r = seen.result(i);
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_EQ(r->reason, wire::finish_reason::length);
    EXPECT_EQ(seen.events(i),
              (std::vector<std::string>{"accepted", "<0>", "<1>", "<2>", "<3>", "<4>"}));
  }
  EXPECT_EQ(server->stats().connections_accepted, 1u);
  EXPECT_EQ(server->stats().requests_started, n);
}

TEST(RouterClient, ConcurrentGeneratesFromManyThreadsShareTheConnection) {
  scripted_handler handler;
  auto server = serve(handler);
  auto client = client_for({address_of(*server)});
  ASSERT_TRUE(client);
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      std::uint32_t tokens = 0;
      auto r = client->generate(request_for("Once"), [&](const client_event& e) {
        if (const auto* c = std::get_if<wire::token_chunk>(&e)) tokens += c->tokens.size();
        return true;
      });
      if (r && r->completion_tokens == 10 && tokens == 10) ++good;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 8);
  EXPECT_EQ(server->stats().connections_accepted, 1u);
}

TEST(RouterClient, EachRequestHasItsOwnCancelAndDeadline) {
  scripted_handler handler;
  auto server = serve(handler);
  auto client = client_for({address_of(*server)});
  ASSERT_TRUE(client);
  outcomes seen;
  (void)client->start(request_for("hang", 150), seen.on_event(0), seen.on_done(0));
  auto held = client->start(request_for("hang"), seen.on_event(1), seen.on_done(1));
  (void)client->start(request_for("Once"), seen.on_event(2), seen.on_done(2));
  ASSERT_TRUE(seen.wait_done(2)) << "the deadline and the short request";
  auto timed_out = seen.result(0);
  ASSERT_FALSE(timed_out);
  EXPECT_EQ(timed_out.error().code, errc::timed_out) << timed_out.error().to_string();
  auto done = seen.result(2);
  ASSERT_TRUE(done) << done.error().to_string();
  EXPECT_EQ(done->completion_tokens, 10u);
  held.cancel();  // the one left running, from this thread
  ASSERT_TRUE(seen.wait_done(3));
  auto cancelled = seen.result(1);
  ASSERT_TRUE(cancelled) << cancelled.error().to_string();
  EXPECT_EQ(cancelled->reason, wire::finish_reason::cancelled);
  EXPECT_EQ(handler.wait_for_cancels(2),
            (std::vector<cancel_reason>{cancel_reason::client_cancelled,
                                        cancel_reason::client_cancelled}));
  held.cancel();  // ended: a no-op
}

TEST(RouterClient, APulledStreamYieldsEventsInOrderThenItsResult) {
  scripted_handler handler;
  auto server = serve(handler);
  auto client = client_for({address_of(*server)});
  ASSERT_TRUE(client);
  auto stream = client->stream(request_for("Once"));
  std::vector<std::string> seen;
  while (auto e = stream.next()) {
    if (const auto* c = std::get_if<wire::token_chunk>(&*e)) {
      seen.push_back(c->text);
    } else {
      seen.push_back("accepted");
    }
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"accepted", "<0>", "<1>", "<2>", "<3>", "<4>"}));
  ASSERT_TRUE(stream.result()) << stream.result().error().to_string();
  EXPECT_EQ(stream.result()->completion_tokens, 10u);
  // Cancelled while pulled: it ends.
  auto hung = client->stream(request_for("hang"));
  ASSERT_TRUE(hung.next()) << "accepted";
  hung.cancel();
  while (hung.next()) {
  }
  ASSERT_TRUE(hung.result()) << hung.result().error().to_string();
  EXPECT_EQ(hung.result()->reason, wire::finish_reason::cancelled);
}

TEST(RouterClient, ThePoolSpreadsRequestsAndResumesThemWhenARouterGoesAway) {
  scripted_handler first_handler;
  scripted_handler second_handler;
  auto first = serve(first_handler);
  auto second = serve(second_handler);
  const auto first_address = address_of(*first);
  auto client = client_for({first_address, address_of(*second)});
  ASSERT_TRUE(client);
  ASSERT_TRUE(all_up(*client));
  outcomes seen;
  constexpr std::uint64_t n = 6;
  for (std::uint64_t i = 0; i < n; ++i) {
    (void)client->start(request_for("hang"), seen.on_event(i), seen.on_done(i));
  }
  ASSERT_TRUE(seen.wait_accepted(n));
  EXPECT_EQ(first_handler.requests().size(), n / 2) << "placed on the router with fewer open";
  EXPECT_EQ(second_handler.requests().size(), n / 2);

  first.reset();  // its requests go on through the second router, from where they were
  for (int i = 0; i < 1000 && second_handler.requests().size() < n; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  const auto resumed = second_handler.requests();
  ASSERT_EQ(resumed.size(), n);
  for (std::size_t i = n / 2; i < n; ++i) {
    ASSERT_TRUE(resumed[i].resume.has_value()) << i;
    EXPECT_TRUE(resumed[i].has_seed);
    EXPECT_EQ(resumed[i].params.seed, 1234u) << "the first router's seed";
  }
  const auto routers = client->routers();
  ASSERT_EQ(routers.size(), 2u);
  EXPECT_NE(routers[0].now, router_health::state::up);
  EXPECT_GE(routers[0].failures, 1u);
  EXPECT_FALSE(routers[0].last_error.empty());
  EXPECT_EQ(routers[1].now, router_health::state::up);
  EXPECT_EQ(routers[1].open_requests, n);
  EXPECT_EQ(client->connected_router(), address_of(*second));

  client->cancel();  // every request in progress
  ASSERT_TRUE(seen.wait_done(n));
  std::uint32_t resumes = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    auto r = seen.result(i);
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_EQ(r->reason, wire::finish_reason::cancelled);
    EXPECT_EQ(r->router, address_of(*second));
    EXPECT_EQ(seen.events(i), std::vector<std::string>{"accepted"}) << "one accepted each";
    resumes += r->resumes;
  }
  EXPECT_EQ(resumes, n / 2);
}

TEST(RouterClient, GenerateFromACallbackIsRefusedAndTheClientCarriesOn) {
  scripted_handler handler;
  auto server = serve(handler);
  auto client = client_for({address_of(*server)});
  ASSERT_TRUE(client);
  std::promise<error> refused;
  outcomes seen;
  (void)client->start(
      request_for("Once"),
      [&](const client_event& e) {
        if (std::holds_alternative<wire::accepted>(e)) {
          auto inner =
              client->generate(request_for("Twice"), [](const client_event&) { return true; });
          refused.set_value(inner ? error{} : inner.error());
        }
        return true;
      },
      seen.on_done(0));
  EXPECT_EQ(refused.get_future().get().code, errc::invalid_argument);
  ASSERT_TRUE(seen.wait_done(1));
  EXPECT_TRUE(seen.result(0));
}

TEST(NativeServer, ClientDisconnectCancelsOpenRequests) {
  scripted_handler handler;
  auto server = serve(handler);
  {
    raw_connection raw(server->local_port());
    raw.send(request_for("hang"));
    auto accepted = raw.receive();
    ASSERT_TRUE(accepted) << accepted.error().to_string();
    ASSERT_TRUE(std::holds_alternative<wire::accepted>(*accepted));
  }
  EXPECT_EQ(handler.wait_for_cancels(1), std::vector<cancel_reason>{cancel_reason::disconnected});
  EXPECT_EQ(server->stats().requests_cancelled, 1u);
}

TEST(NativeServer, GarbageIsRejectedAndTheServerKeepsServing) {
  scripted_handler handler;
  auto server = serve(handler);
  {
    raw_connection raw(server->local_port());
    const std::string http = "GET / HTTP/1.1\r\nHost: router\r\n\r\n";
    asio::write(raw.socket, asio::buffer(http));
    auto answer = raw.receive();
    ASSERT_TRUE(answer) << answer.error().to_string();
    auto* r = std::get_if<wire::rejected>(&*answer);
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->code, errc::invalid_argument);
    EXPECT_EQ(r->client_tag, 0u);
    EXPECT_NE(r->message.find("frame length 542393671"), std::string::npos) << r->message;
    EXPECT_FALSE(raw.receive());  // then the server closes
  }
  {
    // A well-framed message a client may not send.
    raw_connection raw(server->local_port());
    raw.send(wire::finished{1, wire::finish_reason::length, 1, 1});
    auto answer = raw.receive();
    ASSERT_TRUE(answer);
    ASSERT_TRUE(std::holds_alternative<wire::rejected>(*answer));
    EXPECT_NE(std::get<wire::rejected>(*answer).message.find("may not send 'finished'"),
              std::string::npos);
  }
  EXPECT_EQ(server->stats().frames_rejected, 2u);
  auto client = client_for({address_of(*server)});
  ASSERT_TRUE(client);
  auto result = client->generate(request_for("Once"), [](const client_event&) { return true; });
  ASSERT_TRUE(result) << result.error().to_string();
}

TEST(NativeServer, OpenRequestsPerConnectionAreBounded) {
  scripted_handler handler;
  server_options options;
  options.max_open_requests_per_connection = 1;
  auto server = serve(handler, options);
  raw_connection raw(server->local_port());
  auto first = request_for("hang");
  first.client_tag = 1;
  raw.send(first);
  ASSERT_TRUE(raw.receive());  // accepted
  auto duplicate = first;
  raw.send(duplicate);
  auto second = first;
  second.client_tag = 2;
  raw.send(second);
  auto dup_answer = raw.receive();
  ASSERT_TRUE(dup_answer);
  ASSERT_TRUE(std::holds_alternative<wire::rejected>(*dup_answer));
  EXPECT_EQ(std::get<wire::rejected>(*dup_answer).code, errc::invalid_argument);
  auto answer = raw.receive();
  ASSERT_TRUE(answer);
  ASSERT_TRUE(std::holds_alternative<wire::rejected>(*answer));
  EXPECT_EQ(std::get<wire::rejected>(*answer).client_tag, 2u);
  EXPECT_EQ(std::get<wire::rejected>(*answer).code, errc::overloaded);
  EXPECT_EQ(server->stats().requests_rejected, 2u);
  // Cancelling the first frees the slot; the answer is finished{cancelled}.
  raw.send(wire::cancel_request{1});
  auto cancelled = raw.receive();
  ASSERT_TRUE(cancelled);
  ASSERT_TRUE(std::holds_alternative<wire::finished>(*cancelled));
  EXPECT_EQ(std::get<wire::finished>(*cancelled).reason, wire::finish_reason::cancelled);
  auto third = request_for("Once");
  third.client_tag = 3;
  raw.send(third);
  auto accepted = raw.receive();
  ASSERT_TRUE(accepted);
  EXPECT_TRUE(std::holds_alternative<wire::accepted>(*accepted));
}

TEST(NativeServer, ConnectionsAreBounded) {
  scripted_handler handler;
  server_options options;
  options.max_connections = 1;
  auto server = serve(handler, options);
  raw_connection first(server->local_port());
  first.send(request_for("Once"));
  ASSERT_TRUE(first.receive());  // the first connection is served
  raw_connection second(server->local_port());
  auto answer = second.receive();
  ASSERT_TRUE(answer);
  ASSERT_TRUE(std::holds_alternative<wire::rejected>(*answer));
  EXPECT_EQ(std::get<wire::rejected>(*answer).code, errc::overloaded);
  EXPECT_EQ(server->stats().connections_refused, 1u);
  EXPECT_EQ(server->stats().connections_open, 1u);
}

TEST(NativeServer, OneClientAddressCannotTakeEveryConnection) {
  scripted_handler handler;
  server_options options;
  options.max_connections = 8;
  options.max_connections_per_client = 3;
  auto server = serve(handler, options);
  std::vector<std::unique_ptr<raw_connection>> idle;
  for (int i = 0; i < 3; ++i)
    idle.push_back(std::make_unique<raw_connection>(server->local_port()));
  raw_connection fourth(server->local_port());
  auto answer = fourth.receive();
  ASSERT_TRUE(answer);
  ASSERT_TRUE(std::holds_alternative<wire::rejected>(*answer));
  EXPECT_EQ(std::get<wire::rejected>(*answer).code, errc::overloaded);
  EXPECT_NE(std::get<wire::rejected>(*answer).message.find("per client address"),
            std::string::npos);
  // Another address is served while the first holds its three.
  raw_connection other(server->local_port(), "127.0.0.2");
  other.send(request_for("Once"));
  auto accepted = other.receive();
  ASSERT_TRUE(accepted);
  EXPECT_TRUE(std::holds_alternative<wire::accepted>(*accepted));
  EXPECT_EQ(server->stats().connections_refused, 1u);
  // A connection that ends gives its address's place back.
  idle.pop_back();
  std::unique_ptr<raw_connection> again;
  for (int i = 0; i < 200 && server->stats().connections_open != 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  again = std::make_unique<raw_connection>(server->local_port());
  again->send(request_for("Once"));
  auto served = again->receive();
  ASSERT_TRUE(served);
  EXPECT_TRUE(std::holds_alternative<wire::accepted>(*served));
}

TEST(NativeServer, SlowReaderEndsTheRequest) {
  scripted_handler handler;
  server_options options;
  options.max_queued_bytes_per_stream = 64u << 10;
  auto server = serve(handler, options);
  raw_connection raw(server->local_port());
  raw.send(request_for("flood"));  // and never read
  EXPECT_EQ(handler.wait_for_cancels(1), std::vector<cancel_reason>{cancel_reason::slow_reader});
  // send() returned false on the flooding thread, which may still be on its way out.
  for (int i = 0; i < 1000 && !handler.flood_stopped(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(handler.flood_stopped());
  EXPECT_GT(handler.max_queued_seen(), 0u);
  EXPECT_LE(handler.max_queued_seen(), options.max_queued_bytes_per_stream);
  // What was queued still arrives, and the request ends with rejected{overloaded}.
  std::size_t chunks = 0;
  for (;;) {
    auto m = raw.receive();
    ASSERT_TRUE(m) << "after " << chunks << " chunks: " << m.error().to_string();
    if (std::holds_alternative<wire::token_chunk>(*m)) ++chunks;
    if (auto* r = std::get_if<wire::rejected>(&*m)) {
      EXPECT_EQ(r->code, errc::overloaded);
      EXPECT_NE(r->message.find("reads too slowly"), std::string::npos) << r->message;
      break;
    }
  }
  EXPECT_GT(chunks, 0u);
}

/// A router whose start() throws for the prompt "throw" (a bug in the router, say).
class throwing_handler final : public generate_handler {
 public:
  void start(const wire::generate_request& request,
             std::shared_ptr<response_stream> stream) override {
    if (request.prompt == "throw") throw std::runtime_error("a bug in the router");
    (void)stream->send(wire::accepted{});
    (void)stream->send(wire::finished{0, wire::finish_reason::length, 1, 0});
  }
  void cancel(const response_stream&, cancel_reason) override {}
};

TEST(NativeServer, AHandlerThatThrowsEndsItsConnectionAndTheServerServesOn) {
  throwing_handler handler;
  auto server = serve(handler);
  auto client = client_for({address_of(*server)});
  ASSERT_TRUE(client);
  auto bad = client->generate(request_for("throw"), [](const auto&) { return true; });
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::failed) << bad.error().to_string();
  auto good = client->generate(request_for("fine"), [](const auto&) { return true; });
  EXPECT_TRUE(good) << good.error().to_string();
  EXPECT_EQ(server->stats().handler_failures, 1u);
}

}  // namespace
}  // namespace baton::client
