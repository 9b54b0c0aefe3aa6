// Streams one generation from a Baton cluster to stdout as its text arrives: the prompt as
// the model reads it, then each token (greedy, 100 positions: what llama2.c prints).
//   stream_generation [PROMPT] [ROUTER...]   (routers default to cluster.toml's two)
#include <client/router_client.hpp>

#include <cstdio>
#include <string>
#include <variant>

int main(int argc, char** argv) {
  baton::client::client_options options;
  for (int i = 2; i < argc; ++i) options.routers.emplace_back(argv[i]);
  if (options.routers.empty()) options.routers = {"127.0.0.1:7000", "127.0.0.1:7001"};

  auto client = baton::client::router_client::connect(options);
  if (!client) {
    std::fprintf(stderr, "cannot connect: %s\n", client.error().to_string().c_str());
    return 1;
  }
  baton::wire::generate_request request;
  request.prompt = argc > 1 ? argv[1] : "Once upon a time";
  request.max_positions = 100;
  auto result = (*client)->generate(request, [](const baton::client::client_event& event) {
    if (const auto* accepted = std::get_if<baton::wire::accepted>(&event)) {
      std::fputs(accepted->prompt_text.c_str(), stdout);
    } else if (const auto* chunk = std::get_if<baton::wire::token_chunk>(&event)) {
      std::fputs(chunk->text.c_str(), stdout);
    }
    std::fflush(stdout);
    return true;  // false would cancel the request
  });
  std::fputc('\n', stdout);
  if (!result) {
    std::fprintf(stderr, "generation failed: %s\n", result.error().to_string().c_str());
    return 1;
  }
  std::fprintf(stderr, "%u prompt + %u completion tokens (seed %llu) via %s\n",
               result->prompt_tokens, result->completion_tokens,
               static_cast<unsigned long long>(result->seed), result->router.c_str());
  return 0;
}
