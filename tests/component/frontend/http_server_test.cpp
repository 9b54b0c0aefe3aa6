// The OpenAI-compatible HTTP server against a scripted generate_handler, over 127.0.0.1
// (ports picked by the kernel), driven by a Beast HTTP client and raw sockets.
#include "frontend/http_server.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange unincluded

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "tests/component/frontend/threaded_handler.hpp"

namespace baton::frontend {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
using namespace std::chrono_literals;

/// The default script's pieces: "é" (C3 A9) is split across two chunks, as a byte-fallback
/// token would split it.
const std::vector<std::string> pieces = {"Hello", " wor", "ld", " caf\xC3", "\xA9", " end"};
const std::string script_text = "Hello world caf\xC3\xA9 end";

/// Answers from its own threads, by the prompt: "reject:CODE" -> rejected{CODE}; "slow" ->
/// a piece every 10 ms until cancelled; "hang" -> accepted, then nothing until cancelled;
/// anything else -> the default script, then finished{length}.
class scripted_handler final : public testing::threaded_handler {
 public:
  ~scripted_handler() override { stop(); }

 private:
  void run(const wire::generate_request& request, response_stream& stream) override {
    const std::string& p = request.prompt;
    if (p.starts_with("reject:")) {
      const auto code = p.substr(7);
      const errc e = code == "overloaded"  ? errc::overloaded
                     : code == "timed_out" ? errc::timed_out
                     : code == "invalid"   ? errc::invalid_argument
                                           : errc::failed;
      (void)stream.send(wire::rejected{0, e, fmt::format("scripted {}", code)});
      return;
    }
    (void)stream.send(wire::accepted{0, wire::request_id{7}, request.params.seed, 5,
                                     fmt::format("[{}]", p), "prefill-0", "decode-0",
                                     "disaggregated"});
    if (p == "slow" || p == "hang") {
      for (std::uint32_t i = 0; stream.open(); ++i) {
        if (p == "slow" && !stream.send(wire::token_chunk{0, 5 + i, {i}, "x"})) break;
        if (wait_stopping(10ms)) return;
      }
      return;
    }
    std::uint32_t n = 0;
    for (const auto& piece : pieces) {
      if (!stream.send(wire::token_chunk{0, 5 + n, {n}, piece})) return;
      ++n;
      std::this_thread::sleep_for(2ms);
    }
    (void)stream.send(wire::finished{0, wire::finish_reason::length, 5, n});
  }
};

struct reply {
  unsigned status = 0;
  std::string body;
  std::string content_type;
  [[nodiscard]] json parsed() const { return json::parse(body, nullptr, false); }
};

/// One request over a connected `stream` (plain or TLS) and its reply (status 0 if none).
template <class Stream>
reply exchange(Stream& stream, http::verb verb, const std::string& target,
               const std::string& body) {
  http::request<http::string_body> req(verb, target, 11);
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.prepare_payload();
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> res;
  res.body_limit(64u << 20);
  beast::error_code ec;
  http::read(stream, buffer, res, ec);
  if (ec) return {};
  return {res.get().result_int(), res.get().body(),
          std::string(res.get()[http::field::content_type])};
}

reply call(std::uint16_t port, http::verb verb, const std::string& target,
           const std::string& body = {}) {
  asio::io_context io;
  beast::tcp_stream stream(io);
  stream.expires_after(10s);
  stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  return exchange(stream, verb, target, body);
}

/// GET `target` from the address `source` (any of 127.0.0.0/8 is this host's).
reply get_from(const char* source, std::uint16_t port, const std::string& target) {
  asio::io_context io;
  beast::tcp_stream stream(io);
  stream.expires_after(10s);
  stream.socket().open(tcp::v4());
  stream.socket().bind(tcp::endpoint(asio::ip::make_address(source), 0));
  stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  http::request<http::empty_body> req(http::verb::get, target, 11);
  req.set(http::field::host, "127.0.0.1");
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  beast::error_code ec;
  http::read(stream, buffer, res, ec);
  if (ec) return {};
  return {res.result_int(), res.body(), std::string(res[http::field::content_type])};
}

reply post(std::uint16_t port, const std::string& target, const json& body) {
  return call(port, http::verb::post, target, body.dump());
}

/// Writes `bytes` on a fresh connection, then returns everything read until the server
/// closes (or 5 s pass).
std::string raw(std::uint16_t port, const std::string& bytes) {
  asio::io_context io;
  beast::tcp_stream stream(io);
  stream.expires_after(5s);
  stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  beast::error_code ec;
  asio::write(stream, asio::buffer(bytes), ec);
  std::string out;
  std::array<char, 4096> chunk{};
  for (;;) {
    const auto n = stream.read_some(asio::buffer(chunk), ec);
    out.append(chunk.data(), n);
    if (ec) break;
  }
  return out;
}

/// The JSON of every "data:" event of an SSE body, "[DONE]" as the string "[DONE]".
std::vector<json> events(const std::string& body) {
  std::vector<json> out;
  std::size_t at = 0;
  while ((at = body.find("data: ", at)) != std::string::npos) {
    const auto end = body.find("\n\n", at);
    const auto data = body.substr(at + 6, end - at - 6);
    out.push_back(data == "[DONE]" ? json("[DONE]") : json::parse(data, nullptr, false));
    at = end;
  }
  return out;
}

class HttpServer : public ::testing::Test {
 protected:
  void SetUp() override { start({}); }

  void start(http_options o) {
    server_.reset();
    o.model = "stories260K";
    o.max_tokens_limit = 1000;
    if (!o.metrics_text) o.metrics_text = [] { return std::string("baton_test_metric 1\n"); };
    if (!o.healthy) o.healthy = [this] { return healthy_.load(); };
    auto s = http_server::start(std::move(o), handler_);
    ASSERT_TRUE(s) << s.error().to_string();
    server_ = std::move(*s);
    port_ = server_->local_port();
  }

  json completion(json extra = json::object()) {
    json body = {{"model", "stories260K"}, {"prompt", "Once"}, {"max_tokens", 6}};
    body.update(extra);
    return body;
  }

  json chat(json extra = json::object()) {
    json body = {
        {"model", "stories260K"},
        {"messages",
         {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}}}};
    body.update(extra);
    return body;
  }

  /// The text of a streamed answer; checks the SSE shape on the way.
  static std::string streamed_text(const reply& r, bool chat_api) {
    EXPECT_EQ(r.status, 200u);
    EXPECT_EQ(r.content_type, "text/event-stream");
    const auto ev = events(r.body);
    EXPECT_GE(ev.size(), 3u);
    EXPECT_EQ(ev.back(), json("[DONE]"));
    std::string text;
    for (const auto& e : ev) {
      EXPECT_FALSE(e.is_discarded()) << r.body;  // every event is JSON, hence valid UTF-8
      if (!e.is_object() || e["choices"].empty()) continue;
      const auto& choice = e["choices"][0];
      if (chat_api) {
        text += choice["delta"].value("content", "");
      } else {
        text += choice["text"].get<std::string>();
      }
    }
    return text;
  }

  /// Waits until no generation is in progress and no connection is open.
  bool wait_for_idle() {
    for (int i = 0; i < 500; ++i) {
      const auto s = server_->stats();
      if (s.generations_open == 0 && s.connections_open == 0) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  scripted_handler handler_;
  std::atomic<bool> healthy_{true};
  std::unique_ptr<http_server> server_;
  std::uint16_t port_ = 0;
};

TEST_F(HttpServer, CompletionNotStreamed) {
  auto r = post(port_, "/v1/completions", completion({{"seed", 3}, {"user", "u1"}}));
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.content_type, "application/json");
  const auto j = r.parsed();
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "stories260K");
  EXPECT_EQ(j["choices"][0]["text"], script_text);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(j["usage"]["completion_tokens"], 6);
  EXPECT_EQ(j["usage"]["total_tokens"], 11);
  EXPECT_EQ(j["baton"]["seed"], 3);
  EXPECT_EQ(j["baton"]["placement"], "disaggregated");
  const auto req = handler_.requests().at(0);
  EXPECT_EQ(req.prompt, "Once");
  EXPECT_EQ(req.max_tokens, 6u);
  EXPECT_TRUE(req.has_seed);
  EXPECT_EQ(req.params.seed, 3u);
  EXPECT_EQ(req.params.temperature, 1.0f);  // OpenAI's defaults
  EXPECT_EQ(req.params.top_p, 1.0f);
  EXPECT_EQ(req.timeout_ms, http_options{}.default_timeout_ms);
}

TEST_F(HttpServer, ParametersReachTheRequest) {
  auto r = post(port_, "/v1/completions",
                completion({{"temperature", 0}, {"top_p", 0.5}, {"max_tokens", 0}}));
  ASSERT_EQ(r.status, 200u) << r.body;
  const auto req = handler_.requests().at(0);
  EXPECT_EQ(req.params.temperature, 0.0f);
  EXPECT_EQ(req.params.top_p, 0.5f);
  EXPECT_EQ(req.max_tokens, 0u);  // until the context ends
  EXPECT_FALSE(req.has_seed);
}

TEST_F(HttpServer, CompletionEchoPrependsThePromptText) {
  auto r = post(port_, "/v1/completions", completion({{"echo", true}}));
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.parsed()["choices"][0]["text"], fmt::format("[Once]{}", script_text));
  auto s = post(port_, "/v1/completions", completion({{"echo", true}, {"stream", true}}));
  EXPECT_EQ(streamed_text(s, false), fmt::format("[Once]{}", script_text));
}

TEST_F(HttpServer, CompletionStreamedHoldsSplitCharactersAndEndsWithDone) {
  auto r = post(port_, "/v1/completions",
                completion({{"stream", true}, {"stream_options", {{"include_usage", true}}}}));
  EXPECT_EQ(streamed_text(r, false), script_text);
  const auto ev = events(r.body);
  bool whole = false;
  for (const auto& e : ev) {
    if (!e.is_object() || e["choices"].empty()) continue;
    EXPECT_TRUE(e.contains("usage"));                        // null until the last chunk
    whole = whole || e["choices"][0]["text"] == "\xC3\xA9";  // held until complete
  }
  EXPECT_TRUE(whole) << "the split character is sent whole, in one piece";
  const auto& usage_chunk = ev.at(ev.size() - 2);
  EXPECT_TRUE(usage_chunk["choices"].empty());
  EXPECT_EQ(usage_chunk["usage"]["completion_tokens"], 6);
  EXPECT_EQ(ev.at(ev.size() - 3)["choices"][0]["finish_reason"], "length");
  // Without include_usage, no usage anywhere.
  auto plain = post(port_, "/v1/completions", completion({{"stream", true}}));
  EXPECT_EQ(streamed_text(plain, false), script_text);
  EXPECT_EQ(plain.body.find("usage"), std::string::npos);
}

TEST_F(HttpServer, ChatUsesTheTemplateStreamedAndNot) {
  auto r = post(port_, "/v1/chat/completions", chat());
  ASSERT_EQ(r.status, 200u) << r.body;
  const auto j = r.parsed();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], script_text);
  EXPECT_EQ(j["usage"]["completion_tokens"], 6);
  EXPECT_EQ(handler_.requests().at(0).prompt, "System: Be brief.\nUser: Hi\nAssistant:");
  auto s = post(port_, "/v1/chat/completions", chat({{"stream", true}}));
  EXPECT_EQ(streamed_text(s, true), script_text);
  const auto ev = events(s.body);
  EXPECT_EQ(ev.at(0)["object"], "chat.completion.chunk");
  EXPECT_EQ(ev.at(0)["choices"][0]["delta"]["role"], "assistant");
}

TEST_F(HttpServer, StopStringCutsTheTextAndCancelsTheRest) {
  auto r = post(port_, "/v1/completions", completion({{"stop", "world"}}));
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.parsed()["choices"][0]["text"], "Hello ");
  EXPECT_EQ(r.parsed()["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(handler_.wait_for_cancels(1), std::vector{cancel_reason::client_cancelled});
  // A stop string that spans a split character, streamed.
  auto s = post(port_, "/v1/chat/completions",
                chat({{"stream", true}, {"stop", {"nothing", "caf\xC3\xA9"}}}));
  EXPECT_EQ(streamed_text(s, true), "Hello world ");
  EXPECT_NE(s.body.find("\"finish_reason\":\"stop\""), std::string::npos);
  EXPECT_EQ(handler_.wait_for_cancels(2).size(), 2u);
}

TEST_F(HttpServer, BadJsonAndWrongTypesAre400) {
  const auto expect_400 = [&](const std::string& body, const std::string& param) {
    auto r = call(port_, http::verb::post, "/v1/completions", body);
    EXPECT_EQ(r.status, 400u) << body;
    const auto j = r.parsed();
    ASSERT_FALSE(j.is_discarded()) << r.body;
    EXPECT_EQ(j["error"]["type"], "invalid_request_error") << r.body;
    if (!param.empty()) {
      EXPECT_EQ(j["error"]["param"], param) << r.body;
    }
  };
  expect_400(R"({"model":"stories260K","prompt":"Once)", "");  // truncated
  expect_400("", "");
  expect_400("[1,2]", "");
  expect_400(R"({"model":"stories260K","prompt":5})", "prompt");
  expect_400(R"({"model":"stories260K","prompt":"a","max_tokens":"x"})", "max_tokens");
  expect_400(R"({"model":"stories260K","prompt":"a","max_tokens":2.5})", "max_tokens");
  expect_400(R"({"model":"stories260K","prompt":"a","max_tokens":-1})", "max_tokens");
  expect_400(R"({"model":"stories260K","prompt":"a","max_tokens":100000000000})", "max_tokens");
  expect_400(R"({"model":"stories260K","prompt":"a","max_tokens":1001})", "max_tokens");
  expect_400(R"({"model":"stories260K","prompt":"a","stream":"yes"})", "stream");
  expect_400(R"({"model":"stories260K","prompt":"a","temperature":"hot"})", "temperature");
  expect_400(R"({"model":"stories260K","prompt":"a","temperature":-1})", "temperature");
  expect_400(R"({"model":"stories260K","prompt":"a","top_p":0})", "top_p");
  expect_400(R"({"model":"stories260K","prompt":"a","seed":-4})", "seed");
  expect_400(R"({"model":"stories260K","prompt":"a","stop":["a","b","c","d","e"]})", "stop");
  expect_400(R"({"model":"stories260K","prompt":"a","stop":""})", "stop");
  expect_400(R"({"model":"stories260K"})", "prompt");
  expect_400(R"({"prompt":"a"})", "model");
  expect_400(R"({"model":7,"prompt":"a"})", "model");
  auto chat_bad = call(port_, http::verb::post, "/v1/chat/completions",
                       R"({"model":"stories260K","messages":[{"role":"robot","content":"x"}]})");
  EXPECT_EQ(chat_bad.status, 400u);
  auto chat_empty = call(port_, http::verb::post, "/v1/chat/completions",
                         R"({"model":"stories260K","messages":[]})");
  EXPECT_EQ(chat_empty.status, 400u);
  EXPECT_TRUE(handler_.requests().empty());
}

TEST_F(HttpServer, TheContentPartThatEndedTheRouterIs400AndTheServerServesOn) {
  auto r = call(
      port_, http::verb::post, "/v1/chat/completions",
      R"({"model":"stories260K","messages":[{"role":"user","content":[{"type":1,"text":"x"}]}]})");
  EXPECT_EQ(r.status, 400u) << r.body;
  EXPECT_EQ(r.parsed()["error"]["param"], "messages[0].content[0].type");
  // A type-confused value in each field, one request each: all answered 4xx, none crash.
  for (const auto& [field, value] :
       std::vector<std::pair<std::string, json>>{{"model", 1},
                                                 {"messages", "x"},
                                                 {"max_tokens", {1}},
                                                 {"temperature", {{"a", 1}}},
                                                 {"top_p", "0.5"},
                                                 {"seed", 1.5},
                                                 {"stream", 1},
                                                 {"stream_options", {1}},
                                                 {"stop", 4},
                                                 {"user", false}}) {
    auto body = chat();
    body[field] = value;
    const auto bad = post(port_, "/v1/chat/completions", body);
    EXPECT_GE(bad.status, 400u) << field;
    EXPECT_LT(bad.status, 500u) << field;
  }
  EXPECT_EQ(post(port_, "/v1/chat/completions", chat()).status, 200u);
  EXPECT_EQ(server_->stats().handler_failures, 0u);
}

/// A router whose start() throws for the prompt "throw" (a bug in the router, say).
class throwing_handler final : public generate_handler {
 public:
  void start(const wire::generate_request& request,
             std::shared_ptr<response_stream> stream) override {
    if (request.prompt == "throw") throw std::runtime_error("a bug in the router");
    (void)stream->send(wire::accepted{});
    (void)stream->send(wire::token_chunk{0, 1, {1}, "ok"});
    (void)stream->send(wire::finished{0, wire::finish_reason::length, 1, 1});
  }
  void cancel(const response_stream&, cancel_reason reason) override { reasons.push_back(reason); }
  std::vector<cancel_reason> reasons;  // io thread; read after the server stopped
};

TEST(HttpServerBoundary, AHandlerThatThrowsEndsItsRequestWith500AndTheServerServesOn) {
  throwing_handler handler;
  http_options o;
  o.model = "m";
  auto server = http_server::start(o, handler);
  ASSERT_TRUE(server);
  const auto port = (*server)->local_port();
  const auto bad = post(port, "/v1/completions", {{"model", "m"}, {"prompt", "throw"}});
  EXPECT_EQ(bad.status, 500u);
  EXPECT_EQ(bad.parsed()["error"]["type"], "server_error");
  const auto good = post(port, "/v1/completions", {{"model", "m"}, {"prompt", "fine"}});
  EXPECT_EQ(good.status, 200u);
  EXPECT_EQ(good.parsed()["choices"][0]["text"], "ok");
  EXPECT_EQ((*server)->stats().handler_failures, 1u);
  server->reset();
  EXPECT_EQ(handler.reasons, std::vector{cancel_reason::failed});
}

TEST_F(HttpServer, UnknownParameterIs400NamingIt) {
  auto r = post(port_, "/v1/completions", completion({{"nn", 2}}));
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.parsed()["error"]["param"], "nn");
  EXPECT_NE(r.parsed()["error"]["message"].get<std::string>().find(": nn"), std::string::npos);
  auto echo_in_chat = post(port_, "/v1/chat/completions", chat({{"echo", true}}));
  EXPECT_EQ(echo_in_chat.status, 400u);
  EXPECT_EQ(echo_in_chat.parsed()["error"]["param"], "echo");
}

TEST_F(HttpServer, UnknownModelOrPathIs404) {
  auto r = post(port_, "/v1/completions", completion({{"model", "gpt-4"}}));
  EXPECT_EQ(r.status, 404u);
  EXPECT_EQ(r.parsed()["error"]["code"], "model_not_found");
  EXPECT_EQ(call(port_, http::verb::get, "/v2/nothing").status, 404u);
  EXPECT_EQ(call(port_, http::verb::get, "/v1/models/gpt-4").status, 404u);
  EXPECT_EQ(call(port_, http::verb::get, "/v1/completions").status, 405u);
}

TEST_F(HttpServer, ThreeMegabyteBodyIs413) {
  const std::string garbage(3u << 20, 'g');
  auto r = call(port_, http::verb::post, "/v1/completions", garbage);
  EXPECT_EQ(r.status, 413u);
  EXPECT_EQ(r.parsed()["error"]["code"], "request_too_large");
  // Without a Content-Length: chunked, cut off at the limit all the same.
  std::string chunked =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 48; ++i)
    chunked += fmt::format("{:x}\r\n{}\r\n", 65536, garbage.substr(0, 65536));
  EXPECT_TRUE(raw(port_, chunked).starts_with("HTTP/1.1 413")) << "chunked";
  EXPECT_EQ(post(port_, "/v1/completions", completion()).status, 200u);
}

TEST_F(HttpServer, NonHttpBytesGet400AndAClose) {
  const std::string junk = std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11) +
                           "\r\nnot http at all\r\n\r\n";
  const auto answer = raw(port_, junk);
  EXPECT_TRUE(answer.empty() || answer.starts_with("HTTP/1.1 400")) << answer;
  EXPECT_TRUE(raw(port_, "GARBAGE\r\n\r\n").starts_with("HTTP/1.1 400"));
  EXPECT_EQ(post(port_, "/v1/completions", completion()).status, 200u);
  EXPECT_TRUE(wait_for_idle());
}

TEST_F(HttpServer, ClientVanishingMidStreamCancelsTheRequest) {
  for (bool streamed : {true, false}) {
    const auto started = handler_.requests().size();
    {
      asio::io_context io;
      tcp::socket s(io);
      s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
      const auto body = completion({{"prompt", "slow"}, {"stream", streamed}}).dump();
      const auto req =
          fmt::format("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{}",
                      body.size(), body);
      asio::write(s, asio::buffer(req));
      if (streamed) {
        std::array<char, 512> some{};
        (void)s.read_some(asio::buffer(some));  // the stream is under way
      } else {                                  // the router has the request
        for (int i = 0; i < 1000 && handler_.requests().size() == started; ++i) {
          std::this_thread::sleep_for(5ms);
        }
        ASSERT_EQ(handler_.requests().size(), started + 1);
      }
    }  // the client vanishes
    const auto cancels = handler_.wait_for_cancels(streamed ? 1 : 2);
    ASSERT_EQ(cancels.size(), streamed ? 1u : 2u);
    EXPECT_EQ(cancels.back(), cancel_reason::disconnected);
  }
  EXPECT_TRUE(wait_for_idle());
  EXPECT_EQ(post(port_, "/v1/completions", completion()).status, 200u);
}

TEST_F(HttpServer, OverloadIs429AtOnce) {
  const auto t0 = std::chrono::steady_clock::now();
  auto r = post(port_, "/v1/completions", completion({{"prompt", "reject:overloaded"}}));
  EXPECT_EQ(r.status, 429u);
  EXPECT_EQ(r.parsed()["error"]["code"], "overloaded");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  // The server's own bound on requests in progress.
  http_options o;
  o.max_open_requests = 1;
  start(o);
  asio::io_context io;
  tcp::socket hold(io);
  hold.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
  const auto body = completion({{"prompt", "hang"}, {"stream", true}}).dump();
  asio::write(hold, asio::buffer(fmt::format(
                        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{}",
                        body.size(), body)));
  std::array<char, 512> some{};
  (void)hold.read_some(asio::buffer(some));
  EXPECT_EQ(post(port_, "/v1/completions", completion()).status, 429u);
  hold.close();
  EXPECT_EQ(handler_.wait_for_cancels(1).size(), 1u);
  EXPECT_TRUE(wait_for_idle());
  EXPECT_EQ(post(port_, "/v1/completions", completion()).status, 200u);
}

TEST_F(HttpServer, AThousandIdleConnectionsFromOneAddressDoNotLockOutAnother) {
  // Fewer places than the idle connections: without a limit per address they would take
  // them all, and every other client would get 429.
  http_options o;
  o.max_connections = 500;
  start(o);
  rlimit files{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &files), 0);
  if (files.rlim_cur < 1200) {
    files.rlim_cur = std::min<rlim_t>(files.rlim_max, 4096);
    (void)::setrlimit(RLIMIT_NOFILE, &files);
  }
  if (files.rlim_cur < 1200) GTEST_SKIP() << "needs 1200 open files, has " << files.rlim_cur;
  asio::io_context io;
  std::vector<tcp::socket> idle;
  for (int i = 0; i < 1000; ++i) {
    idle.emplace_back(io);
    idle.back().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
  }
  const auto started = std::chrono::steady_clock::now();
  const auto served = get_from("127.0.0.2", port_, "/v1/models");
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(served.status, 200u) << served.body;
  std::printf("figures: another client served in %.1f ms beside 1000 idle connections\n",
              std::chrono::duration<double, std::milli>(took).count());
  // The crowded address holds max_connections_per_client, once the other client has gone.
  for (int i = 0; i < 200 && server_->stats().connections_open != 64; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(server_->stats().connections_open, 64u);
  // One more from the crowded address: 429, naming the limit.
  const auto refused = get_from("127.0.0.1", port_, "/v1/models");
  EXPECT_EQ(refused.status, 429u);
  EXPECT_NE(refused.body.find("per client address"), std::string::npos) << refused.body;
}

TEST_F(HttpServer, AClientThatTricklesItsHeadersIsClosedAtTheHeaderDeadline) {
  http_options o;
  o.header_timeout_ms = 300;
  start(o);
  asio::io_context io;
  tcp::socket slow(io);
  slow.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
  asio::write(slow, asio::buffer(std::string("GET /v1/models HTTP/1.1\r\nHost: x\r\n")));
  // The client holds its end open: the server closed its own.
  EXPECT_TRUE(wait_for_idle()) << "still open after the header deadline";
  std::array<char, 64> scratch{};
  beast::error_code ec;
  (void)slow.read_some(asio::buffer(scratch), ec);
  EXPECT_EQ(ec, asio::error::eof);
  // A whole request on a new connection is served as before.
  EXPECT_EQ(call(port_, http::verb::get, "/v1/models").status, 200u);
}

TEST_F(HttpServer, RouterFailuresMapToStatusCodes) {
  EXPECT_EQ(post(port_, "/v1/completions", completion({{"prompt", "reject:timed_out"}})).status,
            504u);
  EXPECT_EQ(post(port_, "/v1/completions", completion({{"prompt", "reject:invalid"}})).status,
            400u);
  EXPECT_EQ(post(port_, "/v1/completions", completion({{"prompt", "reject:failed"}})).status, 500u);
  healthy_ = false;
  EXPECT_EQ(post(port_, "/v1/completions", completion()).status, 503u);
  EXPECT_EQ(call(port_, http::verb::get, "/health").status, 503u);
  healthy_ = true;
  EXPECT_EQ(call(port_, http::verb::get, "/health").status, 200u);
}

TEST_F(HttpServer, ARouterThatGoesQuietGets504AfterTheDeadline) {
  http_options o;
  o.default_timeout_ms = 100;  // then 5 s of grace for the router's own timed_out
  start(o);
  auto r = post(port_, "/v1/completions", completion({{"prompt", "hang"}}));
  EXPECT_EQ(r.status, 504u);
  EXPECT_EQ(r.parsed()["error"]["code"], "timed_out");
  EXPECT_EQ(handler_.wait_for_cancels(1).size(), 1u);
  EXPECT_EQ(post(port_, "/v1/completions", completion()).status, 200u);
}

TEST_F(HttpServer, ModelsHealthAndMetrics) {
  auto models = call(port_, http::verb::get, "/v1/models");
  ASSERT_EQ(models.status, 200u);
  EXPECT_EQ(models.parsed()["data"][0]["id"], "stories260K");
  EXPECT_EQ(call(port_, http::verb::get, "/v1/models/stories260K").status, 200u);
  EXPECT_EQ(post(port_, "/v1/completions", completion({{"stream", true}})).status, 200u);
  auto metrics = call(port_, http::verb::get, "/metrics");
  ASSERT_EQ(metrics.status, 200u);
  EXPECT_NE(metrics.body.find("baton_test_metric 1\n"), std::string::npos);
  EXPECT_NE(metrics.body.find("baton_http_requests_total{code=\"200\"}"), std::string::npos);
  EXPECT_NE(metrics.body.find("baton_http_inter_token_seconds_count 5"), std::string::npos)
      << metrics.body;
}

TEST_F(HttpServer, KeepAliveServesSeveralRequestsOnOneConnection) {
  asio::io_context io;
  beast::tcp_stream stream(io);
  stream.expires_after(10s);
  stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
  beast::flat_buffer buffer;
  for (bool streamed : {false, true, false}) {
    http::request<http::string_body> req(http::verb::post, "/v1/completions", 11);
    req.set(http::field::host, "x");
    req.body() = completion({{"stream", streamed}}).dump();
    req.prepare_payload();
    http::write(stream, req);
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    EXPECT_EQ(res.result_int(), 200u);
    EXPECT_TRUE(res.keep_alive());
  }
}

/// A self-signed certificate for 127.0.0.1 and its key, made with the openssl tool in a
/// fresh directory.
std::filesystem::path test_certificate() {
  const auto dir =
      std::filesystem::temp_directory_path() / fmt::format("baton-tls-test-{}", ::getpid());
  std::filesystem::create_directories(dir);
  const auto command = fmt::format(
      "cd '{}' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
      "-keyout tls.key -out tls.pem -days 1 -subj /CN=127.0.0.1 "
      "-addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1",
      dir.string());
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
  return dir;
}

TEST_F(HttpServer, OverTlsItServesHttpsAndCutsPlainHttpAndSilentClients) {
  const auto dir = test_certificate();
  http_options bad;
  bad.tls_certificate_file = (dir / "missing.pem").string();
  bad.tls_key_file = (dir / "tls.key").string();
  auto refused = http_server::start(bad, handler_);
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message.find("missing.pem"), std::string::npos)
      << refused.error().message;

  http_options o;
  o.tls_certificate_file = (dir / "tls.pem").string();
  o.tls_key_file = (dir / "tls.key").string();
  o.header_timeout_ms = 300;
  start(o);

  asio::io_context io;
  asio::ssl::context client(asio::ssl::context::tls_client);
  client.load_verify_file((dir / "tls.pem").string());
  client.set_verify_mode(asio::ssl::verify_peer);
  const tcp::endpoint at(asio::ip::make_address("127.0.0.1"), port_);
  const auto tls_call = [&](const std::string& target, const std::string& body) {
    beast::ssl_stream<beast::tcp_stream> stream(io, client);
    beast::get_lowest_layer(stream).expires_after(10s);
    beast::get_lowest_layer(stream).connect(at);
    stream.handshake(asio::ssl::stream_base::client);
    return exchange(stream, body.empty() ? http::verb::get : http::verb::post, target, body);
  };
  const auto answer = tls_call("/v1/completions", completion().dump());
  ASSERT_EQ(answer.status, 200u) << answer.body;
  EXPECT_EQ(answer.parsed()["choices"][0]["text"], script_text);

  EXPECT_EQ(call(port_, http::verb::get, "/health").status, 0u) << "plain HTTP on a TLS port";
  {
    tcp::socket silent(io);  // connects and says nothing: cut at the header deadline
    silent.connect(at);
    std::array<char, 16> scratch{};
    boost::system::error_code ec;
    const auto started = std::chrono::steady_clock::now();
    (void)silent.read_some(asio::buffer(scratch), ec);
    EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
    EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  }
  const auto metrics = tls_call("/metrics", "").body;
  EXPECT_NE(metrics.find("baton_http_tls_handshake_failures_total 2"), std::string::npos)
      << metrics;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace baton::frontend
