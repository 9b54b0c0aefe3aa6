// `baton selfcheck`: proves this build works on this machine before the transport lands:
// every wire message round-trips through the codec, and damaged frames are refused.
#include <chrono>
#include <cstdio>

#include <fmt/format.h>

#include "schemas/codec.hpp"
#include "schemas/samples.hpp"
#include "tools/commands.hpp"

namespace baton::tools {
namespace {

/// Round-trips `f` `iterations` times; returns nanoseconds per encode + decode.
double round_trip_ns(const wire::frame& f, wire::decoder& dec, int iterations) {
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) {
    auto bytes = wire::encode(f);
    auto back = dec.decode(bytes->bytes());
    if (!back) return -1.0;
  }
  const std::chrono::duration<double, std::nano> took = std::chrono::steady_clock::now() - start;
  return took.count() / iterations;
}

int run_selfcheck(int iterations) {
  wire::decoder dec;
  int failures = 0;
  fmt::print("{:<12} {:>8} {:>14}  {}\n", "message", "bytes", "enc+dec ns", "round trip");
  for (const auto& f : wire::sample_frames()) {
    auto bytes = wire::encode(f);
    if (!bytes) {
      fmt::print(stderr, "encode {}: {}\n", wire::body_name(f.body), bytes.error().to_string());
      ++failures;
      continue;
    }
    auto back = dec.decode(bytes->bytes());
    const bool same = back && *back == f;
    failures += same ? 0 : 1;
    fmt::print("{:<12} {:>8} {:>14.0f}  {}\n", wire::body_name(f.body), bytes->bytes().size(),
               round_trip_ns(f, dec, iterations), same ? "ok" : "MISMATCH");
  }
  // A damaged frame must be refused and counted, never crash.
  auto bytes = wire::encode(wire::sample_frames().front());
  bytes->words.back() ^= 0xffff'ffff'ffff'ffffULL;
  bytes->words.resize(bytes->words.size() - 1);
  const bool refused = !dec.decode(bytes->bytes()) && dec.rejected_total() == 1;
  failures += refused ? 0 : 1;
  fmt::print("truncated frame refused and counted: {}\n", refused ? "ok" : "FAILED");
  fmt::print("selfcheck: {}\n", failures == 0 ? "passed" : "FAILED");
  return failures == 0 ? 0 : 1;
}

}  // namespace

void add_selfcheck_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("selfcheck", "Check this build: codec round trips and refusals");
  static int iterations = 20000;
  cmd->add_option("--iterations", iterations, "Round trips timed per message")
      ->check(CLI::Range(1, 10'000'000));
  cmd->callback([&exit_code] { exit_code = run_selfcheck(iterations); });
}

}  // namespace baton::tools
