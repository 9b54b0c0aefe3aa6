#pragma once

// Internal to bench/: each benchmark registers itself under `baton bench`.

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "base/error.hpp"
#include "launcher/local_cluster.hpp"

namespace baton::bench {

/// The serving path alone, for `bench router` and `bench client`: a ready local cluster of
/// a router (native port), a Trainium-kind prefill node and a wafer-scale-kind decode node
/// running the emulated engine with zero compute time, as real `baton node` processes on
/// 127.0.0.1. `model` and `tokenizer` are looked up in the model search path (their shape
/// and vocabulary). Fails with not_found for a missing file, or why the cluster did not
/// become ready.
[[nodiscard]] expected<std::unique_ptr<launcher::local_cluster>> serving_path_cluster(
    const std::string& name, const std::string& model, const std::string& tokenizer);

/// The `bench` subcommand that every benchmark attaches to, created on first use.
[[nodiscard]] CLI::App& bench_command(CLI::App& app);

void add_bench_actors_command(CLI::App& app, int& exit_code);
void add_bench_engine_command(CLI::App& app, int& exit_code);
void add_bench_disagg_command(CLI::App& app, int& exit_code);
/// `bench router`: the router's added latency against emulated zero-compute workers.
void add_bench_router_command(CLI::App& app, int& exit_code);
void add_bench_transport_command(CLI::App& app, int& exit_code);
/// `bench client`: requests multiplexed over one connection against blocking clients.
void add_bench_client_command(CLI::App& app, int& exit_code);
/// `baton bench tls`: the HTTP API's TLS costs, plain and TLS side by side (bench_tls.cpp).
void add_bench_tls_command(CLI::App& app, int& exit_code);
/// `bench serve`: an open-loop benchmark of any OpenAI-compatible endpoint.
void add_bench_serve_command(CLI::App& app, int& exit_code);

}  // namespace baton::bench
