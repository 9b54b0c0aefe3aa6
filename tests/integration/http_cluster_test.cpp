// The router's OpenAI-compatible HTTP API (docs/http-api.md) on real node processes on
// 127.0.0.1 (a router, a prefill node, a decode node), driven by real clients: curl and the
// official openai Node.js SDK (installed into build/npm by tools/setup.sh). A completion's
// echoed prompt + text must equal the single-process output for the same prompt, steps
// and seed.
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange unincluded

#include <boost/asio.hpp>

#include "cluster_harness.hpp"
#include "engine/cpu_engine.hpp"
#include "engine/generate.hpp"
#include "engine/model.hpp"
#include "engine/tokenizer.hpp"

namespace baton::testing {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// curl's answer: the HTTP status and the body.
struct curl_reply {
  int status = 0;
  std::string body;
  [[nodiscard]] json parsed() const { return json::parse(body, nullptr, false); }
};

curl_reply curl(const test_cluster& c, const std::string& path, const std::string& args) {
  const auto body_file = c.dir() / "curl-body";
  const auto r = run(fmt::format("curl -sS -N --max-time 30 -o {} -w '%{{http_code}}' {} {}",
                                 quote(body_file.string()), args,
                                 quote("http://" + c.http("router-0") + path)));
  return {std::atoi(r.out.c_str()), read_file(body_file)};
}

curl_reply curl_post(const test_cluster& c, const std::string& path, const std::string& json_body,
                     const std::string& more = {}) {
  return curl(c, path,
              fmt::format("-X POST -H 'Content-Type: application/json' --data-binary {} {}",
                          quote(json_body), more));
}

/// The text of an SSE body's chunks; "" unless it ends with "data: [DONE]".
std::string sse_text(const std::string& body, const char* field) {
  if (body.find("data: [DONE]\n\n") == std::string::npos) return "";
  std::string text;
  std::size_t at = 0;
  while ((at = body.find("data: {", at)) != std::string::npos) {
    const auto end = body.find("\n\n", at);
    const auto j = json::parse(body.substr(at + 6, end - at - 6), nullptr, false);
    at = end;
    if (j.is_discarded()) return "<not JSON>";
    if (j["choices"].empty()) continue;
    const auto& choice = j["choices"][0];
    text += std::string(field) == "text" ? choice["text"].get<std::string>()
                                         : choice["delta"].value("content", "");
  }
  return text;
}

/// Runs tests/http/openai_sdk_check.mjs (the openai Node SDK installed in BATON_NPM_PREFIX)
/// against `base_url`: `prompt`, `steps` tokens, seed 7; `env` ("NAME=value ...", quoted)
/// goes before it.
command_result run_sdk_check(const std::string& base_url, const std::string& prompt, int steps,
                             const std::string& env = {}) {
  return run(fmt::format("{} node {} {} {} stories260K {} {} 7 2>&1", env,
                         quote(BATON_SOURCE_DIR "/tests/http/openai_sdk_check.mjs"),
                         quote(BATON_NPM_PREFIX), quote(base_url), quote(prompt), steps));
}

double metric(const test_cluster& c, const std::string& node, const std::string& series) {
  return c.metric(node, series);
}

const std::vector<cluster_node> fleet = {
    {"router-0", {"router"}, "cpu"},
    {"prefill-0", {"prefill"}, "trainium"},
    {"decode-0", {"decode"}, "wafer-scale", "cpu", "kv_blocks = 1024"}};

class HttpCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cluster_.start_serving()) << cluster_.process("router-0").log();
    wait_for_health();
  }
  virtual void wait_for_health() {
    ASSERT_TRUE(wait_until([&] { return curl(cluster_, "/health", "").status == 200; }, 10s))
        << cluster_.process("router-0").log();
  }

  /// Checks a completion's echoed prompt + text against the single-process output.
  void expect_reference(const std::string& echoed, int prompt_tokens, int max_tokens) {
    // llama2.c's -n counts positions, the prompt's (BOS included) among them.
    EXPECT_EQ(echoed + "\n", reference_(prompt_, 0.8f, 0.95f, 7, prompt_tokens + max_tokens - 1));
  }

  [[nodiscard]] std::string completion_body(bool stream, int max_tokens = 60) const {
    json body = {{"model", "stories260K"}, {"prompt", prompt_}, {"max_tokens", max_tokens},
                 {"temperature", 0.8},     {"top_p", 0.95},     {"seed", 7},
                 {"echo", true},           {"stream", stream}};
    if (stream) body["stream_options"] = {{"include_usage", true}};
    return body.dump();
  }

  test_cluster cluster_{fleet};
  reference reference_;
  const std::string prompt_ = "Lily and Ben";
};

TEST_F(HttpCluster, CurlCompletionsMatchTheSingleProcessOutput) {
  auto plain = curl_post(cluster_, "/v1/completions", completion_body(false));
  ASSERT_EQ(plain.status, 200) << plain.body;
  const auto j = plain.parsed();
  const int prompt_tokens = j["usage"]["prompt_tokens"];
  EXPECT_EQ(j["usage"]["completion_tokens"], 60);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["baton"]["seed"], 7);
  expect_reference(j["choices"][0]["text"], prompt_tokens, 60);

  auto streamed = curl_post(cluster_, "/v1/completions", completion_body(true));
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  expect_reference(sse_text(streamed.body, "text"), prompt_tokens, 60);
  EXPECT_NE(streamed.body.find(R"("usage":{"completion_tokens":60)"), std::string::npos)
      << streamed.body;

  const json chat = {{"model", "stories260K"},
                     {"messages", {{{"role", "user"}, {"content", "Tell me a story."}}}},
                     {"max_tokens", 30},
                     {"seed", 3}};
  auto chat_plain = curl_post(cluster_, "/v1/chat/completions", chat.dump());
  ASSERT_EQ(chat_plain.status, 200) << chat_plain.body;
  const auto message = chat_plain.parsed()["choices"][0]["message"];
  EXPECT_EQ(message["role"], "assistant");
  EXPECT_FALSE(message["content"].get<std::string>().empty());
  json chat_stream = chat;
  chat_stream["stream"] = true;
  auto chat_streamed = curl_post(cluster_, "/v1/chat/completions", chat_stream.dump());
  EXPECT_EQ(sse_text(chat_streamed.body, "delta"), message["content"]);  // same seed

  // What `baton up` reads for its ready line.
  EXPECT_NE(cluster_.process("router-0")
                .log()
                .find(fmt::format("router ready native={} http=http://{} (",
                                  cluster_.native("router-0"), cluster_.http("router-0"))),
            std::string::npos)
      << cluster_.process("router-0").log();
  auto models = curl(cluster_, "/v1/models", "");
  EXPECT_EQ(models.parsed()["data"][0]["id"], "stories260K");
  auto metrics = curl(cluster_, "/metrics", "");
  EXPECT_NE(metrics.body.find("baton_router_ttft_seconds"), std::string::npos);
  EXPECT_NE(metrics.body.find("baton_http_requests_total{code=\"200\"}"), std::string::npos);
  // The workers' serving metrics, labelled by node: KV pool, queue depth, transfers.
  EXPECT_NE(metrics.body.find("baton_decode_kv_free_blocks{node=\""), std::string::npos)
      << metrics.body;
  EXPECT_NE(metrics.body.find("baton_prefill_queue_depth{node=\""), std::string::npos);
  EXPECT_NE(metrics.body.find("baton_prefill_kv_bytes_total{node=\""), std::string::npos);
  EXPECT_NE(metrics.body.find("baton_prefill_kv_exposed_seconds_bucket{node=\""),
            std::string::npos);
}

TEST_F(HttpCluster, OpenaiNodeSdkCompletionsAndChat) {
  const std::string prefix = BATON_NPM_PREFIX;
  ASSERT_TRUE(std::filesystem::exists(prefix + "/node_modules/openai/package.json"))
      << "the openai SDK is not installed in " << prefix << ": run tools/setup.sh";
  const auto r = run_sdk_check("http://" + cluster_.http("router-0") + "/v1", prompt_, 50);
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  const int prompt_tokens = j["completion_usage"]["prompt_tokens"];
  expect_reference(j["completion"], prompt_tokens, 50);
  expect_reference(j["completion_stream"], prompt_tokens, 50);
  EXPECT_EQ(j["completion_finish"], "length");
  EXPECT_EQ(j["completion_stream_usage"]["completion_tokens"], 50);
  EXPECT_EQ(j["chat_role"], "assistant");
  EXPECT_FALSE(j["chat"].get<std::string>().empty());
  EXPECT_EQ(j["chat_stream"], j["chat"]);  // same seed, same text
  EXPECT_EQ(j["unknown_model_status"], 404);
  EXPECT_EQ(j["models"], json::array({"stories260K"}));
}

/// The sampling the openai_params_check.mjs requests ask for, as the one-process engine
/// takes it: choice `choice` of `steps` positions.
engine::generate_options sdk_params(int steps, std::uint32_t choice) {
  engine::generate_options o{0.8f, 0.95f, 7, steps};
  o.sampling.frequency_penalty = 0.5f;
  o.sampling.presence_penalty = 0.3f;
  o.sampling.logit_bias = {{13, 2.5f}, {29, -100.0f}};
  o.choice = choice;
  return o;
}

TEST_F(HttpCluster, OpenaiNodeSdkChoicesPenaltiesBiasesAndLogprobs) {
  const std::string prefix = BATON_NPM_PREFIX;
  ASSERT_TRUE(std::filesystem::exists(prefix + "/node_modules/openai/package.json"))
      << "the openai SDK is not installed in " << prefix << ": run tools/setup.sh";
  const auto r =
      run(fmt::format("node {} {} {} stories260K {} 40 7 2>&1",
                      quote(BATON_SOURCE_DIR "/tests/http/openai_params_check.mjs"), quote(prefix),
                      quote("http://" + cluster_.http("router-0") + "/v1"), quote(prompt_)));
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  const int prompt_tokens = j["completion_usage"]["prompt_tokens"];
  const int steps = prompt_tokens + 40 - 1;
  // The one-process output starts with the prompt's echo and ends with a newline.
  const auto echo = reference_.echo(prompt_);
  const auto generated = [&](std::uint32_t c) {
    const auto all = reference_(prompt_, sdk_params(steps, c));
    return all.substr(echo.size(), all.size() - echo.size() - 1);
  };
  ASSERT_EQ(j["completion"].size(), 3u);
  std::set<std::string> texts;
  for (std::uint32_t c = 0; c < 3; ++c) {
    const auto& choice = j["completion"][c];
    EXPECT_EQ(choice["index"], c);
    EXPECT_EQ(choice["text"], generated(c)) << "choice " << c;
    EXPECT_EQ(j["completion_stream"][c], generated(c)) << "streamed choice " << c;
    EXPECT_EQ(choice["tokens"], 40);
    EXPECT_EQ(choice["top"][0], 2);
    EXPECT_LE(choice["sum_first"].get<double>(), 1.0 + 1e-6);
    for (const auto& lp : choice["logprobs"]) EXPECT_LE(lp.get<double>(), 0.0);
    texts.insert(choice["text"].get<std::string>());
  }
  EXPECT_EQ(texts.size(), 3u) << "each choice has its own seed";
  EXPECT_EQ(j["completion_usage"]["completion_tokens"], 120);
  ASSERT_EQ(j["chat"].size(), 2u);
  for (std::uint32_t c = 0; c < 2; ++c) {
    EXPECT_EQ(j["chat"][c]["index"], c);
    EXPECT_EQ(j["chat"][c]["logprobs"], 40);
    EXPECT_EQ(j["chat"][c]["top"], 2);
    EXPECT_EQ(j["chat_stream"][c], j["chat"][c]["text"]) << "same seed, same text";
  }
  EXPECT_EQ(j["chat_stream_logprobs"], 80);
  EXPECT_EQ(j["tools_status"], 400);
  EXPECT_EQ(j["tools_param"], "tools");
}

TEST_F(HttpCluster, LangchainChatOpenAIAndOpenAIInvokeStreamAndBatch) {
  const std::string prefix = BATON_NPM_PREFIX;
  ASSERT_TRUE(std::filesystem::exists(prefix + "/node_modules/@langchain/openai/package.json"))
      << "@langchain/openai is not installed in " << prefix << ": run tools/setup.sh";
  const auto r =
      run(fmt::format("node {} {} {} stories260K {} 30 2>&1",
                      quote(BATON_SOURCE_DIR "/tests/http/langchain_check.mjs"), quote(prefix),
                      quote("http://" + cluster_.http("router-0") + "/v1"), quote(prompt_)));
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  // Greedy: every call of a kind gives the same text; completions give the model's text.
  const auto chat = j["chat_invoke"].get<std::string>();
  EXPECT_FALSE(chat.empty());
  EXPECT_EQ(j["chat_stream"], chat);
  EXPECT_EQ(j["chat_batch"], json::array({chat, chat}));
  const auto all = reference_(prompt_, engine::generate_options{0.0f, 0.9f, 1, 256});
  const auto text = j["llm_invoke"].get<std::string>();
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(all.substr(0, reference_.echo(prompt_).size() + text.size()),
            reference_.echo(prompt_) + text)
      << "the model's greedy continuation";
  EXPECT_EQ(j["llm_stream"], text);
  EXPECT_EQ(j["llm_batch"], json::array({text, text}));
}

TEST_F(HttpCluster, BadInputGetsTheRightAnswerAndTheRouterKeepsServing) {
  const std::string m = R"("model":"stories260K")";
  EXPECT_EQ(curl_post(cluster_, "/v1/completions", "{" + m + R"(,"prompt":"Lily)").status, 400);
  EXPECT_EQ(curl_post(cluster_, "/v1/completions", "{" + m + R"(,"prompt":["a",1]})").status, 400);
  EXPECT_EQ(
      curl_post(cluster_, "/v1/completions", "{" + m + R"(,"prompt":"a","max_tokens":-5})").status,
      400);
  EXPECT_EQ(
      curl_post(cluster_, "/v1/completions", "{" + m + R"(,"prompt":"a","max_tokens":99999999})")
          .status,
      400);
  auto unknown = curl_post(cluster_, "/v1/completions", R"({"model":"gpt-4","prompt":"a"})");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(unknown.parsed()["error"]["code"], "model_not_found");
  auto param = curl_post(cluster_, "/v1/completions", "{" + m + R"(,"prompt":"a","logprobz":2})");
  EXPECT_EQ(param.status, 400);
  EXPECT_EQ(param.parsed()["error"]["param"], "logprobz");
  auto tools = curl_post(cluster_, "/v1/chat/completions",
                         "{" + m +
                             R"(,"messages":[{"role":"user","content":"a"}],)"
                             R"("tools":[{"type":"function","function":{"name":"f"}}]})");
  EXPECT_EQ(tools.status, 400);
  EXPECT_EQ(tools.parsed()["error"]["param"], "tools");
  // A prompt longer than the model's context: the router's refusal, as a 400.
  std::string long_prompt;
  for (int i = 0; i < 300; ++i) long_prompt += "Lily and Ben ";
  auto too_long = curl_post(cluster_, "/v1/completions",
                            json{{"model", "stories260K"}, {"prompt", long_prompt}}.dump());
  EXPECT_EQ(too_long.status, 400) << too_long.body;

  // 3 MB of garbage.
  const auto garbage = cluster_.dir() / "garbage";
  {
    std::ofstream out(garbage, std::ios::binary);
    for (std::size_t i = 0; i < (3u << 20); ++i) out.put(static_cast<char>('!' + (i * 7919) % 90));
  }
  auto big = curl(cluster_, "/v1/completions",
                  fmt::format("-X POST --data-binary @{}", quote(garbage.string())));
  EXPECT_EQ(big.status, 413) << big.body;

  // Non-HTTP bytes on the port: a 400 or a closed connection.
  {
    namespace asio = boost::asio;
    asio::io_context io;
    asio::ip::tcp::socket s(io);
    const auto address = cluster_.http("router-0");
    s.connect({asio::ip::make_address("127.0.0.1"),
               static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)))});
    asio::write(s, asio::buffer(std::string("\x16\x03\x01\x00\xff garbage\r\n\r\n", 17)));
    std::string answer;
    boost::system::error_code ec;
    std::array<char, 1024> buffer{};
    for (std::size_t n = 0; !ec; answer.append(buffer.data(), n)) {
      n = s.read_some(asio::buffer(buffer), ec);
    }
    EXPECT_TRUE(answer.empty() || answer.starts_with("HTTP/1.1 400")) << answer;
  }

  // A client that vanishes mid-stream: it reads the first event of a long generation, then
  // closes its connection.
  {
    namespace asio = boost::asio;
    asio::io_context io;
    asio::ip::tcp::socket s(io);
    const auto address = cluster_.http("router-0");
    s.connect({asio::ip::make_address("127.0.0.1"),
               static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)))});
    const auto body = json{{"model", "stories260K"}, {"prompt", "Once"}, {"stream", true}}.dump();
    asio::write(s, asio::buffer(fmt::format(
                       "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{}",
                       body.size(), body)));
    std::string got;
    std::array<char, 1024> buffer{};
    while (got.find("data: ") == std::string::npos) {
      got.append(buffer.data(), s.read_some(asio::buffer(buffer)));
    }
  }
  EXPECT_TRUE(wait_until(
      [&] {
        return metric(cluster_, "router-0",
                      R"(baton_router_requests_total{outcome="client_gone"})") == 1;
      },
      10s))
      << "the router did not hear that the client went away";
  EXPECT_TRUE(wait_until(
      [&] { return metric(cluster_, "router-0", "baton_router_requests_inflight") == 0; }, 10s))
      << "the router still holds the abandoned request";
  EXPECT_TRUE(wait_until(
      [&] {
        return curl(cluster_, "/metrics", "").body.find("\nbaton_http_generations_open 0\n") !=
               std::string::npos;
      },
      10s));

  // Still serving, and still exact.
  auto after = curl_post(cluster_, "/v1/completions", completion_body(false, 20));
  ASSERT_EQ(after.status, 200) << after.body;
  const auto j = after.parsed();
  expect_reference(j["choices"][0]["text"], j["usage"]["prompt_tokens"], 20);
}

/// The same cluster with API keys ([router] api_keys): alice may hold 2 streams, bob may
/// spend 30 tokens a minute.
class HttpClusterWithKeys : public HttpCluster {
 protected:
  static constexpr const char* alice = "bk-alice-test-key-0123456789";
  static constexpr const char* bob = "bk-bob-test-key-0123456789";
  static constexpr const char* carol = "bk-carol-test-key-0123456789";

  void SetUp() override {
    write_keys(
        fmt::format("[[key]]\nname = \"alice\"\nkey = \"{}\"\nmax_streams = 2\n\n"
                    "[[key]]\nname = \"bob\"\nkey = \"{}\"\ntokens_per_minute = 30\n",
                    alice, bob));
    std::ofstream(cluster_.topology_file(), std::ios::app)
        << "\n[router]\napi_keys = \"keys.toml\"\n"
        << more_router_lines();
    HttpCluster::SetUp();
  }
  [[nodiscard]] virtual std::string more_router_lines() const { return {}; }

  void write_keys(const std::string& text) {
    const auto file = cluster_.dir() / "keys.toml";
    std::ofstream(file, std::ios::trunc) << text;
    std::filesystem::permissions(
        file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  }

  static std::string key_header(const char* key) {
    return fmt::format("-H {}", quote(fmt::format("Authorization: Bearer {}", key)));
  }

  /// `baton generate` through router-0's native port (20 positions, this fixture's
  /// sampling), with `flags` (--api-key, --tls-ca): its standard output, or what it said
  /// on failure.
  command_result generate_natively(const std::string& flags) {
    return run(
        fmt::format("{} generate --router {} --temperature 0.8 --top-p 0.95 --seed 7 "
                    "--steps 20 {} {} 2>{}",
                    quote(BATON_BINARY), cluster_.native("router-0"), flags, quote(prompt_),
                    quote((cluster_.dir() / "generate.err").string())));
  }
  [[nodiscard]] std::string generate_errors() const {
    return read_file(cluster_.dir() / "generate.err");
  }
};

TEST_F(HttpClusterWithKeys, TheNativePortTakesTheSameKeysFromLoopback) {
  const auto served = generate_natively(fmt::format("--api-key {}", alice));
  ASSERT_EQ(served.status, 0) << generate_errors();
  EXPECT_EQ(served.out, reference_(prompt_, 0.8f, 0.95f, 7, 20));
  for (const std::string& flags : {std::string(), std::string("--api-key bk-nobody-0123456789")}) {
    const auto refused = generate_natively(flags);
    EXPECT_NE(refused.status, 0) << "served without a valid key: " << flags;
    EXPECT_NE(generate_errors().find("invalid_api_key"), std::string::npos) << generate_errors();
  }
  EXPECT_EQ(metric(cluster_, "router-0", "baton_native_auth_failures_total"), 2);
}

TEST_F(HttpClusterWithKeys, NoKeyIs401AKeyIs200AndEachKeysLimitsHold) {
  for (const std::string& args : {std::string(), key_header("bk-nobody-0123456789abcdef")}) {
    const auto refused = curl(cluster_, "/v1/models", args);
    EXPECT_EQ(refused.status, 401) << refused.body;
    const auto j = refused.parsed();  // OpenAI's error shape
    EXPECT_EQ(j["error"]["code"], "invalid_api_key") << refused.body;
    EXPECT_EQ(j["error"]["type"], "invalid_request_error");
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_TRUE(j["error"]["param"].is_null());
  }
  EXPECT_EQ(curl_post(cluster_, "/v1/completions", completion_body(false)).status, 401);
  EXPECT_EQ(curl(cluster_, "/health", "").status, 200) << "health needs no key";

  auto plain = curl_post(cluster_, "/v1/completions", completion_body(false), key_header(alice));
  ASSERT_EQ(plain.status, 200) << plain.body;
  expect_reference(plain.parsed()["choices"][0]["text"], plain.parsed()["usage"]["prompt_tokens"],
                   60);

  // The official SDK, with its API key.
  const std::string prefix = BATON_NPM_PREFIX;
  ASSERT_TRUE(std::filesystem::exists(prefix + "/node_modules/openai/package.json"));
  const auto sdk = run_sdk_check("http://" + cluster_.http("router-0") + "/v1", prompt_, 20,
                                 "BATON_TEST_API_KEY=" + quote(alice));
  ASSERT_EQ(sdk.status, 0) << sdk.out;
  const auto j = json::parse(sdk.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << sdk.out;
  expect_reference(j["completion"], j["completion_usage"]["prompt_tokens"], 20);
  const auto without = run_sdk_check("http://" + cluster_.http("router-0") + "/v1", prompt_, 20);
  EXPECT_NE(without.status, 0) << "the SDK without the key was served:\n" << without.out;
  EXPECT_NE(without.out.find("401"), std::string::npos) << without.out;

  // Bob's 30 tokens a minute: one 60-token answer spends them all; the next is 429 and
  // says when to come back.
  ASSERT_EQ(curl_post(cluster_, "/v1/completions", completion_body(false), key_header(bob)).status,
            200);
  const auto headers = cluster_.dir() / "headers";
  const auto limited = curl_post(cluster_, "/v1/completions", completion_body(false),
                                 key_header(bob) + " -D " + quote(headers.string()));
  EXPECT_EQ(limited.status, 429) << limited.body;
  EXPECT_EQ(limited.parsed()["error"]["code"], "rate_limit_exceeded") << limited.body;
  EXPECT_NE(read_file(headers).find("Retry-After: "), std::string::npos) << read_file(headers);
  EXPECT_EQ(curl(cluster_, "/v1/models", key_header(alice)).status, 200) << "alice is not bob";

  // baton bench serve against a router with keys.
  const auto bench = run(fmt::format(
      "{} bench serve --url http://{} --api-key {} --model stories260K --requests 2 --rate inf "
      "--prompt-len 4 --output-len 4 --seed 1 --json 2>&1",
      BATON_BINARY, cluster_.http("router-0"), alice));
  const auto figures = json::parse(bench.out.substr(bench.out.rfind("\n{") + 1), nullptr, false);
  ASSERT_FALSE(figures.is_discarded()) << bench.out;
  EXPECT_EQ(figures["completed"], 2) << bench.out;

  // Alice revoked and carol added, without a restart.
  write_keys(fmt::format("[[key]]\nname = \"carol\"\nkey = \"{}\"\n", carol));
  EXPECT_TRUE(wait_until(
      [&] { return curl(cluster_, "/v1/models", key_header(carol)).status == 200; }, 10s));
  EXPECT_EQ(curl(cluster_, "/v1/models", key_header(alice)).status, 401);
  const auto metrics = curl(cluster_, "/metrics", "").body;
  EXPECT_NE(metrics.find("baton_http_api_key_reloads_total{outcome=\"loaded\"} 1"),
            std::string::npos)
      << metrics;
  const auto value = [&](const std::string& series) {
    const auto at = metrics.find("\n" + series + " ");
    return at == std::string::npos ? -1.0 : std::stod(metrics.substr(at + series.size() + 2));
  };
  EXPECT_GE(value("baton_http_auth_failures_total"), 5.0) << metrics;
  EXPECT_GE(value("baton_http_key_limited_total"), 1.0) << metrics;
}

/// The same cluster serving HTTPS ([router] tls_certificate, tls_key) with a certificate
/// for 127.0.0.1 from a test CA made here, and API keys.
class HttpsCluster : public HttpClusterWithKeys {
 protected:
  void SetUp() override {
    const auto dir = cluster_.dir().string();
    std::ofstream(cluster_.dir() / "san.ext") << "subjectAltName=IP:127.0.0.1\n";
    const auto made = run(fmt::format(
        "cd {} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout ca.key -out ca.pem -days 2 -subj '/CN=Baton test CA' && "
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout tls.key "
        "-out tls.csr -subj '/CN=127.0.0.1' && "
        "openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out tls.pem "
        "-days 2 -extfile san.ext 2>&1",
        quote(dir)));
    ASSERT_EQ(made.status, 0) << made.out;
    HttpClusterWithKeys::SetUp();
  }
  [[nodiscard]] std::string more_router_lines() const override {
    return "tls_certificate = \"tls.pem\"\ntls_key = \"tls.key\"\n";
  }
  void wait_for_health() override {
    ASSERT_TRUE(wait_until([&] { return https("/health", "").status == 200; }, 10s))
        << cluster_.process("router-0").log();
  }

  curl_reply https(const std::string& path, const std::string& args) {
    const auto body_file = cluster_.dir() / "curl-body";
    const auto r =
        run(fmt::format("curl -sS -N --max-time 30 --cacert {} -o {} -w '%{{http_code}}' {} {}",
                        quote((cluster_.dir() / "ca.pem").string()), quote(body_file.string()),
                        args, quote("https://" + cluster_.http("router-0") + path)));
    return {std::atoi(r.out.c_str()), read_file(body_file)};
  }
};

TEST_F(HttpsCluster, TheNativePortServesTlsWithTheKeyAndRefusesPlainTcpAndUnknownCas) {
  const auto ca = (cluster_.dir() / "ca.pem").string();
  const auto served = generate_natively(fmt::format("--tls-ca {} --api-key {}", quote(ca), alice));
  ASSERT_EQ(served.status, 0) << generate_errors();
  EXPECT_EQ(served.out, reference_(prompt_, 0.8f, 0.95f, 7, 20));
  const auto keyless = generate_natively(fmt::format("--tls-ca {}", quote(ca)));
  EXPECT_NE(keyless.status, 0);
  EXPECT_NE(generate_errors().find("invalid_api_key"), std::string::npos) << generate_errors();
  const auto plain = generate_natively(fmt::format("--api-key {}", alice));
  EXPECT_NE(plain.status, 0) << "plain TCP to the TLS port was served";
  // A CA that did not sign the router's certificate: the client refuses the router.
  const auto other = run(fmt::format(
      "cd {} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
      "-keyout other.key -out other.pem -days 2 -subj '/CN=Another CA' 2>&1",
      quote(cluster_.dir().string())));
  ASSERT_EQ(other.status, 0) << other.out;
  const auto unknown = generate_natively(fmt::format(
      "--tls-ca {} --api-key {}", quote((cluster_.dir() / "other.pem").string()), alice));
  EXPECT_NE(unknown.status, 0);
  EXPECT_NE(generate_errors().find("TLS handshake"), std::string::npos) << generate_errors();
  EXPECT_GE(metric(cluster_, "router-0", "baton_native_tls_handshake_failures_total"), 2);
}

TEST_F(HttpsCluster, TheOpenaiSdkIsServedOverTlsWithItsKeyAndPlainHttpIsNot) {
  EXPECT_EQ(https("/v1/models", "").status, 401);
  EXPECT_EQ(https("/v1/models", key_header(alice)).status, 200);
  EXPECT_NE(curl(cluster_, "/health", "").status, 200) << "plain HTTP to the TLS port";
  EXPECT_NE(cluster_.process("router-0").log().find("http=https://"), std::string::npos);

  const std::string prefix = BATON_NPM_PREFIX;
  ASSERT_TRUE(std::filesystem::exists(prefix + "/node_modules/openai/package.json"));
  const auto sdk =
      run_sdk_check("https://" + cluster_.http("router-0") + "/v1", prompt_, 20,
                    "NODE_EXTRA_CA_CERTS=" + quote((cluster_.dir() / "ca.pem").string()) +
                        " BATON_TEST_API_KEY=" + quote(alice));
  ASSERT_EQ(sdk.status, 0) << sdk.out;
  const auto j = json::parse(sdk.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << sdk.out;
  expect_reference(j["completion"], j["completion_usage"]["prompt_tokens"], 20);
  expect_reference(j["completion_stream"], j["completion_usage"]["prompt_tokens"], 20);
  const auto metrics = https("/metrics", "").body;
  EXPECT_NE(metrics.find("baton_http_tls_handshake_failures_total 1"), std::string::npos)
      << "the plain HTTP attempt:\n"
      << metrics;
}

}  // namespace
}  // namespace baton::testing
