#include "bench/transport_peers.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace baton::bench {

namespace {

using namespace std::chrono_literals;
using transport::clock;

constexpr std::uint64_t peer_region_bytes = 64ull << 20;
constexpr std::uint64_t quit_word = 0x71756974;  // "quit"

bool write_all(int fd, const void* data, std::size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    auto k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

bool read_all(int fd, void* data, std::size_t n) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    auto k = ::recv(fd, p, n, 0);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

[[noreturn]] void run_sink(int listener) {
  int fd = ::accept(listener, nullptr, nullptr);
  std::vector<char> buffer;
  std::uint64_t header[2];
  while (fd >= 0 && read_all(fd, header, sizeof(header)) && header[0] != 0) {
    buffer.resize(header[0]);
    std::uint64_t left = header[1];
    while (left > 0) {
      auto k = ::recv(fd, buffer.data(), std::min<std::uint64_t>(left, buffer.size()), 0);
      if (k <= 0) ::_exit(1);
      left -= static_cast<std::uint64_t>(k);
    }
    char ack = 1;
    if (!write_all(fd, &ack, 1)) ::_exit(1);
  }
  ::_exit(0);
}

std::uint64_t word(const std::vector<std::byte>& bytes, std::size_t i) {
  std::uint64_t v = 0;
  if (bytes.size() >= (i + 1) * 8) std::memcpy(&v, bytes.data() + i * 8, 8);
  return v;
}

std::vector<std::byte> words(std::initializer_list<std::uint64_t> values) {
  std::vector<std::byte> out(values.size() * 8);
  std::size_t at = 0;
  for (auto v : values) {
    std::memcpy(out.data() + at, &v, 8);
    at += 8;
  }
  return out;
}

/// The fabric peer's life: announce the address on `pipe_fd`, grant, echo, quit.
int serve_fabric(const std::string& provider, int pipe_fd, pid_t parent) {
  transport::endpoint_config config;
  config.provider = provider;
  config.bind.text =
      provider == "tcp" ? "127.0.0.1:0" : fmt::format("baton-bench-peer-{}", ::getpid());
  auto ep = transport::make_endpoint(config);
  std::string address = ep ? (*ep)->local_address().text : std::string();
  std::uint32_t length = static_cast<std::uint32_t>(address.size());
  if (::write(pipe_fd, &length, 4) != 4 ||
      ::write(pipe_fd, address.data(), length) != static_cast<ssize_t>(length) || !ep)
    return 1;
  ::close(pipe_fd);
  auto region = (*ep)->allocate_region(peer_region_bytes);
  if (!region) return 1;
  std::vector<transport::event> batch(16);
  const auto give_up = clock::now() + 300s;
  bool granted = false;
  while (clock::now() < give_up && ::getppid() == parent) {
    (void)(*ep)->wait(100ms);
    auto n = (*ep)->poll(batch);
    for (std::size_t i = 0; i < n; ++i) {
      auto& ev = batch[i];
      if (ev.kind != transport::event_kind::message) continue;
      if (word(ev.payload, 0) == quit_word) return 0;
      if (!granted) {
        auto slice = (*ep)->grant(ev.peer, {*region, 0, peer_region_bytes});
        if (!slice) return 1;
        granted = true;
        (void)(*ep)->send(
            ev.peer, words({static_cast<std::uint64_t>(slice->node), slice->key, slice->length}),
            clock::now() + 5s);
        continue;
      }
      (void)(*ep)->send(ev.peer, ev.payload, clock::now() + 5s);  // echo
    }
  }
  return 2;
}

}  // namespace

forked_child::~forked_child() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
}

tcp_sink::~tcp_sink() {
  if (fd_ < 0) return;
  std::uint64_t header[2] = {0, 0};
  (void)write_all(fd_, header, sizeof(header));
  ::close(fd_);
}

expected<double> tcp_sink::measure(std::uint64_t size, std::uint64_t total) {
  std::vector<char> buffer(size, 'x');
  const std::uint64_t count = std::max<std::uint64_t>(4, total / size);
  std::uint64_t header[2] = {size, count * size};
  auto start = clock::now();
  if (!write_all(fd_, header, sizeof(header))) return fail(errc::disconnected, "tcp sink");
  for (std::uint64_t i = 0; i < count; ++i)
    if (!write_all(fd_, buffer.data(), size)) return fail(errc::disconnected, "tcp sink");
  char ack = 0;
  if (!read_all(fd_, &ack, 1)) return fail(errc::disconnected, "tcp sink: no ack");
  const double s = std::chrono::duration<double>(clock::now() - start).count();
  return static_cast<double>(count * size) / s / 1e9;
}

expected<tcp_sink> start_tcp_sink() {
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return fail(errc::failed, fmt::format("tcp listen: {}", std::strerror(errno)));
  pid_t pid = ::fork();
  if (pid == 0) run_sink(listener);
  ::close(listener);
  forked_child child(pid);
  if (pid < 0) return fail(errc::failed, "fork failed");
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return fail(errc::failed, fmt::format("tcp connect: {}", std::strerror(errno)));
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return tcp_sink(std::move(child), fd);
}

expected<fabric_peer> start_fabric_peer(const std::string& provider) {
  int fds[2];
  if (::pipe(fds) != 0) return fail(errc::failed, "pipe failed");
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    ::_exit(serve_fabric(provider, fds[1], parent));
  }
  ::close(fds[1]);
  forked_child child(pid);
  std::uint32_t length = 0;
  std::string address;
  bool ok = pid > 0 && ::read(fds[0], &length, 4) == 4 && length > 0 && length < 1024;
  if (ok) {
    address.resize(length);
    ok = ::read(fds[0], address.data(), length) == static_cast<ssize_t>(length);
  }
  ::close(fds[0]);
  if (!ok) return fail(errc::failed, "the fabric peer did not start");
  return fabric_peer{std::move(child), address};
}

expected<transport::remote_slice> bench_peer_descriptor(transport::endpoint& ep,
                                                        transport::peer_id peer,
                                                        std::chrono::milliseconds timeout) {
  if (auto sent = ep.send(peer, words({1}), clock::now() + timeout); !sent)
    return tl::unexpected(sent.error());
  const auto until = clock::now() + timeout;
  std::vector<transport::event> batch(16);
  while (clock::now() < until) {
    (void)ep.wait(10ms);
    auto n = ep.poll(batch);
    for (std::size_t i = 0; i < n; ++i) {
      if (batch[i].kind != transport::event_kind::message) continue;
      const auto& p = batch[i].payload;
      return transport::remote_slice{static_cast<transport::node_id>(word(p, 0)), word(p, 1), 0,
                                     word(p, 2)};
    }
  }
  return fail(errc::timed_out, "the fabric peer sent no descriptor");
}

std::vector<std::byte> bench_quit_message() {
  return words({quit_word});
}

}  // namespace baton::bench
