// The fabric cases that need a second process: RMA with the target progressing on its
// own, peer loss by SIGKILL, and bad descriptors against a real remote node. The peer is
// exec'd (transport_peer), so it makes its fi_* calls in a fresh process.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/conformance/transport_test_util.hpp"
#include "transport/endpoint.hpp"
#include "transport/frame_mac.hpp"

namespace baton::transport {
namespace {

using namespace std::chrono_literals;
using testing::await_event;
using testing::shm_kind;
using testing::shm_local_mr_kind;
using testing::tcp_kind;
using testing::tcp_local_mr_kind;

constexpr std::uint64_t quit_word = 0xdead;

/// A child process that is always reaped: SIGKILL + waitpid unless it already exited.
class child_process {
 public:
  explicit child_process(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~child_process() { kill(); }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  [[nodiscard]] bool started() const { return pid_ > 0; }

  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  /// Waits up to `timeout` for a normal exit; returns the exit code or -1.
  int wait_exit(std::chrono::milliseconds timeout) {
    const auto until = clock::now() + timeout;
    while (pid_ > 0 && clock::now() < until) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      ::usleep(10000);
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
};

template <class Kind>
class TransportTwoProcess : public ::testing::Test {
 protected:
  void SetUp() override {
    endpoint_config config;
    config.provider = Kind::provider;
    config.require_local_mr = Kind::local_mr;
    const bool tcp = config.provider == "tcp";
    config.bind.text = tcp ? "127.0.0.1:0" : testing::shm_name("parent");
    auto ep = make_endpoint(config);
    ASSERT_TRUE(ep.has_value()) << ep.error().to_string();
    ep_ = std::move(*ep);
    peer_name_ = tcp ? "127.0.0.1:0" : testing::shm_name("peer");
    peer_ = std::make_unique<child_process>(
        std::vector<std::string>{BATON_TRANSPORT_PEER, Kind::provider, ep_->local_address().text,
                                 peer_name_, Kind::local_mr ? "local-mr" : "plain"});
    ASSERT_TRUE(peer_->started());
    auto ready = await_event(
        *ep_, [](const event& e) { return e.kind == event_kind::message; }, 20000ms);
    ASSERT_TRUE(ready.has_value()) << "the peer process did not announce itself";
    to_peer_ = ready->peer;
    ASSERT_NE(to_peer_, unknown_peer);
    if (!tcp) {  // a bare shm name (as a topology file has it) names the same peer
      auto by_name = ep_->add_peer({peer_name_}, clock::now() + 5s);
      ASSERT_TRUE(by_name.has_value()) << by_name.error().to_string();
      EXPECT_EQ(*by_name, to_peer_);
    }
    const auto node = static_cast<node_id>(testing::unpack(ready->payload, 0));
    const auto bytes = testing::unpack(ready->payload, 3);
    writable_ = {node, testing::unpack(ready->payload, 1), 0, bytes};
    readable_ = {node, testing::unpack(ready->payload, 2), 0, bytes};
    auto local = ep_->allocate_region(bytes);
    ASSERT_TRUE(local.has_value());
    local_ = *local;
  }

  void TearDown() override {
    if (!peer_) return;
    if (ep_ && peer_->started())
      (void)ep_->send(to_peer_, testing::pack({quit_word}), clock::now() + 1s);
    if (peer_->wait_exit(5000ms) != 0) peer_->kill();
    // A SIGKILLed shm peer leaves its region in /dev/shm; names are unique to this test.
    if (std::string(Kind::provider) == "shm") {
      std::error_code ec;
      for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ec))
        if (entry.path().filename().string().starts_with(peer_name_))
          std::filesystem::remove(entry.path(), ec);
    }
  }

  /// Writes `size` bytes with notify and returns the digest the peer computed.
  std::optional<std::uint64_t> write_and_digest(std::uint64_t size) {
    remote_slice target = writable_;
    target.length = size;
    auto op = ep_->write({local_, 0, size}, target, clock::now() + 20s, size);
    EXPECT_TRUE(op.has_value()) << op.error().to_string();
    if (!op) return std::nullopt;
    auto done = await_event(
        *ep_, [&](const event& e) { return e.op == *op; }, 20000ms, &stash_);
    EXPECT_TRUE(done && done->status.has_value());
    auto reply = await_event(
        *ep_,
        [&](const event& e) {
          return e.kind == event_kind::message && testing::unpack(e.payload, 1) == size;
        },
        20000ms, &stash_);
    if (!reply) return std::nullopt;
    return testing::unpack(reply->payload, 2);
  }

  std::unique_ptr<endpoint> ep_;
  std::unique_ptr<child_process> peer_;
  std::string peer_name_;
  peer_id to_peer_{};
  remote_slice writable_;
  remote_slice readable_;
  region_id local_{};
  std::vector<event> stash_;
};

using Kinds = ::testing::Types<tcp_kind, shm_kind, tcp_local_mr_kind, shm_local_mr_kind>;
class KindNames {
 public:
  template <class T>
  static std::string GetName(int) {
    return T::name;
  }
};
TYPED_TEST_SUITE(TransportTwoProcess, Kinds, KindNames);

TYPED_TEST(TransportTwoProcess, RmaWriteAndReadLandAcrossProcesses) {
  for (std::uint64_t size : {64ull << 10, 1ull << 20, 16ull << 20, 64ull << 20}) {
    auto src = this->ep_->region_bytes(this->local_).first(size);
    testing::fill(src, size + 1);
    auto remote_digest = this->write_and_digest(size);
    ASSERT_TRUE(remote_digest.has_value()) << size;
    EXPECT_EQ(*remote_digest, testing::digest(src)) << size;

    remote_slice source = this->readable_;
    source.length = size;
    auto op = this->ep_->read({this->local_, 0, size}, source, clock::now() + 20s);
    ASSERT_TRUE(op.has_value()) << op.error().to_string();
    auto done = await_event(
        *this->ep_, [&](const event& e) { return e.op == *op; }, 20000ms, &this->stash_);
    ASSERT_TRUE(done.has_value());
    ASSERT_TRUE(done->status.has_value()) << done->status.error().to_string();
    std::vector<std::byte> expected(size);
    testing::fill(expected, 77);
    EXPECT_EQ(testing::digest(src), testing::digest(expected)) << size;
  }
  ASSERT_TRUE(this->ep_->send(this->to_peer_, testing::pack({quit_word}), clock::now() + 5s));
  EXPECT_EQ(this->peer_->wait_exit(10000ms), 0);
}

TYPED_TEST(TransportTwoProcess, APlainWriteHasLandedWhenItCompletes) {
  // No notify: the write's own completion must mean the data is in the peer's memory,
  // which the peer checks when our next message asks it to.
  for (std::uint64_t size : {4ull << 10, 1ull << 20, 16ull << 20}) {
    auto src = this->ep_->region_bytes(this->local_).first(size);
    testing::fill(src, size + 9);
    remote_slice target = this->writable_;
    target.length = size;
    auto op = this->ep_->write({this->local_, 0, size}, target, clock::now() + 20s, std::nullopt);
    ASSERT_TRUE(op.has_value()) << op.error().to_string();
    auto done = await_event(
        *this->ep_, [&](const event& e) { return e.op == *op; }, 20000ms, &this->stash_);
    ASSERT_TRUE(done && done->status.has_value());
    ASSERT_TRUE(this->ep_->send(this->to_peer_, testing::pack({2, size}), clock::now() + 5s));
    auto reply = await_event(
        *this->ep_,
        [&](const event& e) {
          return e.kind == event_kind::message && testing::unpack(e.payload, 0) == 2 &&
                 testing::unpack(e.payload, 1) == size;
        },
        20000ms, &this->stash_);
    ASSERT_TRUE(reply.has_value()) << size;
    EXPECT_EQ(testing::unpack(reply->payload, 2), testing::digest(src)) << size;
  }
}

TYPED_TEST(TransportTwoProcess, BadDescriptorsAreRefusedAndTheConnectionSurvives) {
  remote_slice beyond = this->writable_;
  beyond.offset = beyond.length - 4096;
  beyond.length = 8192;
  auto r1 = this->ep_->write({this->local_, 0, 8192}, beyond, clock::now() + 5s, std::nullopt);
  ASSERT_FALSE(r1.has_value());
  EXPECT_EQ(r1.error().code, errc::invalid_argument);
  remote_slice wrong_key = this->writable_;
  wrong_key.key += 1;
  wrong_key.length = 4096;
  auto r2 = this->ep_->read({this->local_, 0, 4096}, wrong_key, clock::now() + 5s);
  ASSERT_FALSE(r2.has_value());
  EXPECT_EQ(r2.error().code, errc::invalid_argument);
  // tcp would have dropped the connection had anything been posted: prove it is intact.
  auto src = this->ep_->region_bytes(this->local_).first(4096);
  testing::fill(src, 5);
  auto remote_digest = this->write_and_digest(4096);
  ASSERT_TRUE(remote_digest.has_value());
  EXPECT_EQ(*remote_digest, testing::digest(src));
}

TYPED_TEST(TransportTwoProcess, PeerLossIsReportedWithinTheDeadline) {
  this->peer_->kill();  // SIGKILL + waitpid
  const auto start = clock::now();
  const auto deadline_ms = 2000ms;
  remote_slice target = this->writable_;
  target.length = 1 << 20;
  auto op = this->ep_->write({this->local_, 0, 1 << 20}, target, start + deadline_ms, 1);
  ASSERT_TRUE(op.has_value()) << op.error().to_string();
  auto done = await_event(
      *this->ep_, [&](const event& e) { return e.op == *op; }, deadline_ms + 2500ms, &this->stash_);
  ASSERT_TRUE(done.has_value()) << "no completion within the deadline";
  ASSERT_FALSE(done->status.has_value()) << "a write to a killed peer reported success";
  std::printf(
      "peer loss reported after %lld ms as: %s\n",
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - start).count()),
      done->status.error().to_string().c_str());
  const auto code = done->status.error().code;
  EXPECT_TRUE(code == errc::timed_out || code == errc::disconnected)
      << done->status.error().to_string();
  EXPECT_LE(clock::now() - start, deadline_ms + 2500ms);
  // tcp may see the broken connection first (disconnected) or not at all (timed_out).
  if (code == errc::timed_out) {
    EXPECT_GE(this->ep_->stats().ops_expired, 1u);
  }
  // The region may go now: whatever the provider still holds keeps the memory alive
  // until it lets go (ASan builds check that nothing touches freed memory).
  EXPECT_TRUE(this->ep_->free_region(this->local_).has_value());
  EXPECT_TRUE(this->ep_->region_bytes(this->local_).empty());
}

TYPED_TEST(TransportTwoProcess, APeerRestartedAtTheSameAddressGetsWhatIsSentToItFirst) {
  // A node restarted on the same ports, which has not said hello to us (it speaks only
  // when spoken to): what we send it under the old peer's id must reach the new process,
  // which drops frames of a sender it has no hello from. Sends to the dead process failed,
  // so our next frame goes after a new hello.
  if (std::string(TypeParam::provider) == "shm") {
    // Our mapping of the dead process's region stays valid memory: sends to it succeed
    // into the void, and the new region under the same name is not mapped again.
    GTEST_SKIP() << "shm does not tell a restart at the same name (left open)";
  }
  std::string at;
  {
    const int holder = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    ASSERT_EQ(::bind(holder, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::getsockname(holder, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    ::close(holder);
    at = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  }
  const auto peer_at = [&](const char* mode) {
    return std::make_unique<child_process>(std::vector<std::string>{
        BATON_TRANSPORT_PEER, TypeParam::provider, this->ep_->local_address().text, at,
        TypeParam::local_mr ? "local-mr" : "plain", mode});
  };
  const auto answered = [&](peer_id to, std::chrono::milliseconds wait) {
    if (!this->ep_->send(to, testing::pack({2, 0}), clock::now() + wait)) return false;
    return await_event(
               *this->ep_,
               [&](const event& e) {
                 return e.kind == event_kind::message && e.peer == to &&
                        testing::unpack(e.payload, 0) == 2 && e.payload.size() == 24;
               },
               wait, &this->stash_)
        .has_value();
  };
  auto first = peer_at("plain");
  auto ready = await_event(
      *this->ep_,
      [](const event& e) { return e.kind == event_kind::message && e.payload.size() == 32; },
      20000ms, &this->stash_);
  ASSERT_TRUE(ready.has_value()) << "the first process did not announce itself";
  const peer_id id = ready->peer;
  ASSERT_TRUE(answered(id, 10000ms));
  first->kill();
  for (int i = 0; i < 3; ++i) (void)answered(id, 100ms);  // to the dead process: lost
  auto second = peer_at("quiet");
  bool reached = false;  // once it is up, what we send is its first frame from us
  for (int i = 0; i < 40 && !reached; ++i) reached = answered(id, 500ms);
  EXPECT_TRUE(reached) << "the restarted process never took a frame from us";
  (void)this->ep_->send(id, testing::pack({quit_word}), clock::now() + 1s);
  EXPECT_EQ(second->wait_exit(5000ms), 0);
}

template <class Kind>
class TransportBadInput : public ::testing::Test {};
TYPED_TEST_SUITE(TransportBadInput, Kinds, KindNames);

TYPED_TEST(TransportBadInput, MalformedFramesAreCountedAndTheEndpointKeepsServing) {
  const bool tcp = std::string(TypeParam::provider) == "tcp";
  auto make = [&](const std::string& role) {
    endpoint_config config;
    config.provider = TypeParam::provider;
    config.require_local_mr = TypeParam::local_mr;
    config.bind.text = tcp ? "127.0.0.1:0" : testing::shm_name(role);
    return make_endpoint(config);
  };
  auto target = make("target");
  ASSERT_TRUE(target.has_value()) << target.error().to_string();
  auto& ep = **target;
  child_process sender(std::vector<std::string>{BATON_TRANSPORT_RAW_SENDER, TypeParam::provider,
                                                ep.local_address().text});
  ASSERT_TRUE(sender.started());
  EXPECT_EQ(sender.wait_exit(20000ms), 0);
  const auto until = clock::now() + 5s;
  while (ep.stats().bad_frames < 4 && clock::now() < until) (void)ep.wait(10ms);
  EXPECT_EQ(ep.stats().bad_frames, 4u);
  EXPECT_EQ(ep.stats().messages_received, 0u);
  std::vector<event> batch(8);
  EXPECT_EQ(ep.poll(batch), 0u);  // nothing surfaced
  // Still serving: a proper peer gets through.
  auto friendly = make("friend");
  ASSERT_TRUE(friendly.has_value());
  auto peer = (*friendly)->add_peer(ep.local_address(), clock::now() + 5s);
  ASSERT_TRUE(peer.has_value()) << peer.error().to_string();
  ASSERT_TRUE((*friendly)->send(*peer, testing::pack({3}), clock::now() + 5s).has_value());
  auto got = await_event(
      ep, [](const event& e) { return e.kind == event_kind::message; }, 5000ms);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(testing::unpack(got->payload, 0), 3u);
}

TYPED_TEST(TransportBadInput, ForgedFramesAreDroppedAndCountedAndAKeylessPeerCannotConnect) {
  const bool tcp = std::string(TypeParam::provider) == "tcp";
  auto make = [&](const std::string& role, std::optional<frame_key> key) {
    endpoint_config config;
    config.provider = TypeParam::provider;
    config.require_local_mr = TypeParam::local_mr;
    config.bind.text = tcp ? "127.0.0.1:0" : testing::shm_name(role);
    config.frame_key = key;
    return make_endpoint(config);
  };
  frame_key cluster{};
  cluster.fill(std::byte{0x17});
  auto target = make("sealed-target", cluster);
  auto member = make("sealed-member", cluster);
  ASSERT_TRUE(target.has_value() && member.has_value());
  auto& ep = **target;
  auto to_target = (*member)->add_peer(ep.local_address(), clock::now() + 5s);
  ASSERT_TRUE(to_target.has_value()) << to_target.error().to_string();
  const auto member_says = [&](std::uint64_t value) {
    ASSERT_TRUE((*member)->send(*to_target, testing::pack({value}), clock::now() + 5s));
    auto got = await_event(
        ep, [](const event& e) { return e.kind == event_kind::message; }, 5000ms);
    ASSERT_TRUE(got.has_value()) << "a member's sealed frame did not arrive";
    EXPECT_EQ(testing::unpack(got->payload, 0), value);
  };
  member_says(1);
  EXPECT_EQ(ep.stats().bad_tags, 0u);

  // Frames claiming to be the member's: unsealed, a hello under another key, and 20
  // messages of the right shape with a wrong tag. None surfaces; each is counted.
  const auto received = ep.stats().messages_received;
  child_process forger(std::vector<std::string>{
      BATON_TRANSPORT_RAW_SENDER, TypeParam::provider, ep.local_address().text, "forge",
      std::to_string(static_cast<std::uint64_t>((*member)->local_node())), "20"});
  ASSERT_TRUE(forger.started());
  EXPECT_EQ(forger.wait_exit(20000ms), 0);
  const auto until = clock::now() + 5s;
  while (ep.stats().bad_tags < 22 && clock::now() < until) (void)ep.wait(10ms);
  EXPECT_EQ(ep.stats().bad_tags, 22u);
  EXPECT_EQ(ep.stats().messages_received, received);
  member_says(2);  // the member's session is untouched

  // Endpoints without the key, or with another, never get a hello through.
  frame_key other{};
  other.fill(std::byte{0x18});
  for (auto key : {std::optional<frame_key>{}, std::optional<frame_key>{other}}) {
    auto stranger = make(key ? "sealed-wrong-key" : "sealed-no-key", key);
    ASSERT_TRUE(stranger.has_value());
    const auto refused_before = ep.stats().bad_tags;
    auto peer = (*stranger)->add_peer(ep.local_address(), clock::now() + 5s);
    ASSERT_FALSE(peer.has_value()) << "a stranger's hello was answered";
    // Refused, and told why, at once (not left to time out).
    EXPECT_EQ(peer.error().code, errc::failed) << peer.error().to_string();
    EXPECT_NE(peer.error().message.find(key ? "does not hold the cluster's secret"
                                            : "holds no cluster secret"),
              std::string::npos)
        << peer.error().to_string();
    EXPECT_GT(ep.stats().bad_tags, refused_before);
    (*stranger)->stop();
  }
  member_says(3);

  // And the reverse: a node with the key refuses a peer whose frames are not sealed.
  auto plain = make("plain-target", std::nullopt);
  ASSERT_TRUE(plain.has_value());
  auto to_plain = (*member)->add_peer((*plain)->local_address(), clock::now() + 5s);
  ASSERT_FALSE(to_plain.has_value()) << "an unsealed hello was taken";
  EXPECT_NE(to_plain.error().message.find("it holds no cluster secret, this node does"),
            std::string::npos)
      << to_plain.error().to_string();
  (*plain)->stop();
}

}  // namespace
}  // namespace baton::transport
