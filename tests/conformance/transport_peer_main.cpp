// The peer process of the two-process transport tests:
//   transport_peer <provider> <parent address> <bind address> [local-mr|plain] [quiet]
// Joins the parent, grants it a 64 MiB write region and a 64 MiB read region filled with
// testing::fill(.., 77), announces both, then answers every notify (and every digest
// request) with the digest of the written prefix until told to quit, 60 s pass or the
// parent dies. Exit 0 on quit, 2 otherwise, 1 on error. `quiet`: it only answers; the
// parent speaks first.
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "tests/conformance/transport_test_util.hpp"
#include "transport/endpoint.hpp"

using namespace baton::transport;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t region_bytes = 64ull << 20;
constexpr std::uint64_t quit_word = 0xdead;

/// Answers what arrives (to its sender) until told to quit.
int serve(endpoint& ep, region_id written) {
  const auto give_up = clock::now() + 60s;
  const pid_t parent_pid = ::getppid();
  std::vector<event> batch(16);
  while (clock::now() < give_up && ::getppid() == parent_pid) {  // the test may have died
    (void)ep.wait(100ms);
    auto n = ep.poll(batch);
    for (std::size_t i = 0; i < n; ++i) {
      const auto& ev = batch[i];
      if (ev.kind == event_kind::notify) {
        auto bytes = ep.region_bytes(written).first(ev.data);
        auto reply = testing::pack({1, ev.data, testing::digest(bytes)});
        if (!ep.send(ev.peer, reply, clock::now() + 5s)) return 1;
      } else if (ev.kind == event_kind::message && testing::unpack(ev.payload, 0) == quit_word) {
        return 0;
      } else if (ev.kind == event_kind::message && testing::unpack(ev.payload, 0) == 2) {
        // "digest of the first N bytes", asked after a plain write completed
        const auto size = testing::unpack(ev.payload, 1);
        auto bytes = ep.region_bytes(written).first(size);
        auto reply = testing::pack({2, size, testing::digest(bytes)});
        if (!ep.send(ev.peer, reply, clock::now() + 5s)) return 1;
      }
    }
  }
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4 || argc > 6) {
    std::fprintf(stderr,
                 "usage: transport_peer <provider> <parent address> <bind> [local-mr|plain] "
                 "[quiet]\n");
    return 1;
  }
  endpoint_config config;
  config.provider = argv[1];
  config.bind.text = argv[3];
  config.require_local_mr = argc >= 5 && std::string(argv[4]) == "local-mr";
  const bool quiet = argc == 6 && std::string(argv[5]) == "quiet";
  auto ep = make_endpoint(config);
  if (!ep) {
    std::fprintf(stderr, "transport_peer: %s\n", ep.error().to_string().c_str());
    return 1;
  }
  auto written = (*ep)->allocate_region(region_bytes);
  if (quiet) {  // the parent speaks first
    std::printf("ready\n");
    std::fflush(stdout);
    return written ? serve(**ep, *written) : 1;
  }
  auto parent = (*ep)->add_peer({argv[2]}, clock::now() + 10s);
  auto readable = (*ep)->allocate_region(region_bytes);
  if (!parent || !written || !readable) {
    std::fprintf(stderr, "transport_peer: set-up failed\n");
    return 1;
  }
  testing::fill((*ep)->region_bytes(*readable), 77);
  auto w = (*ep)->grant(*parent, {*written, 0, region_bytes});
  auto r = (*ep)->grant(*parent, {*readable, 0, region_bytes});
  if (!w || !r) return 1;
  auto ready = testing::pack({static_cast<std::uint64_t>(w->node), w->key, r->key, region_bytes});
  if (!(*ep)->send(*parent, ready, clock::now() + 5s)) return 1;
  return serve(**ep, *written);
}
