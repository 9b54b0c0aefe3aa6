// tools/bench_transport_peers.hpp: the forked peers of `baton bench transport`.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "transport/endpoint.hpp"

namespace baton::bench {

/// A forked child, always reaped: the destructor sends SIGKILL and waits for it.
class forked_child {
 public:
  explicit forked_child(pid_t pid) : pid_(pid) {}
  ~forked_child();
  forked_child(forked_child&& other) noexcept : pid_(other.pid_) { other.pid_ = -1; }
  forked_child& operator=(forked_child&&) = delete;
  forked_child(const forked_child&) = delete;
  forked_child& operator=(const forked_child&) = delete;

 private:
  pid_t pid_;
};

/// The plain-TCP reference: a forked process that sinks what this one streams to it over
/// a loopback socket. Owns the connected socket.
class tcp_sink {
 public:
  tcp_sink(forked_child child, int fd) : child_(std::move(child)), fd_(fd) {}
  ~tcp_sink();
  tcp_sink(tcp_sink&& other) noexcept : child_(std::move(other.child_)), fd_(other.fd_) {
    other.fd_ = -1;
  }
  tcp_sink& operator=(tcp_sink&&) = delete;

  /// Streams `total` bytes (at least 4 sends) in send() calls of `size` bytes; GB/s of
  /// that one repetition, timed until the sink acknowledges the last byte.
  [[nodiscard]] expected<double> measure(std::uint64_t size, std::uint64_t total);

 private:
  forked_child child_;
  int fd_;
};

[[nodiscard]] expected<tcp_sink> start_tcp_sink();

/// A forked process with a Baton endpoint: it grants a 64 MiB region to whoever first
/// messages it, echoes every other message, and exits on bench_quit_message().
struct fabric_peer {
  forked_child child;
  std::string address;
};

[[nodiscard]] expected<fabric_peer> start_fabric_peer(const std::string& provider);

/// Asks the peer (already added on `ep`) for its region; returns the descriptor.
[[nodiscard]] expected<transport::remote_slice> bench_peer_descriptor(
    transport::endpoint& ep, transport::peer_id peer, std::chrono::milliseconds timeout);

[[nodiscard]] std::vector<std::byte> bench_quit_message();

}  // namespace baton::bench
