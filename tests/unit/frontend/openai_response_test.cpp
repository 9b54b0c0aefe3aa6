// OpenAI answer bodies and the streamed-text filter, on their own: no sockets.
#include "frontend/openai_response.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace baton::frontend {
namespace {

using json = nlohmann::json;

TEST(OpenaiResponse, ChatTemplateAndUtf8Boundaries) {
  EXPECT_EQ(chat_prompt({{"system", "S"}, {"user", "U"}, {"assistant", "A"}, {"user", "V"}}),
            "System: S\nUser: U\nAssistant: A\nUser: V\nAssistant:");
  EXPECT_EQ(complete_utf8_prefix(""), 0u);
  EXPECT_EQ(complete_utf8_prefix("ab"), 2u);
  EXPECT_EQ(complete_utf8_prefix("a\xC3"), 1u);
  EXPECT_EQ(complete_utf8_prefix("a\xC3\xA9"), 3u);
  EXPECT_EQ(complete_utf8_prefix("a\xE2\x82"), 1u);
  EXPECT_EQ(complete_utf8_prefix("a\xE2\x82\xAC"), 4u);
  EXPECT_EQ(complete_utf8_prefix("\xF0\x9F\x98"), 0u);
  EXPECT_EQ(complete_utf8_prefix("\xF0\x9F\x98\x80"), 4u);
}

TEST(OpenaiResponse, TheFilterHoldsSplitCharactersAndCutsAtAStopString) {
  text_filter f({"END"});
  bool stopped = false;
  EXPECT_EQ(f.feed("caf\xC3", stopped), "caf");
  EXPECT_EQ(f.feed("\xA9 E", stopped), "\xC3\xA9 ");  // "E" may begin the stop string
  EXPECT_EQ(f.feed("N", stopped), "");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(f.feed("D and more", stopped), "");
  EXPECT_TRUE(stopped);
  text_filter g({"xyz"});
  EXPECT_EQ(g.feed("abx", stopped = false), "ab");
  EXPECT_EQ(g.flush(), "x");
}

TEST(OpenaiResponse, ErrorsHaveOpenAisShapeAndRejectionsTheirStatus) {
  const auto j = json::parse(error_body(bad_request("bad", "max_tokens", "invalid_type")));
  EXPECT_EQ(j["error"]["message"], "bad");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "max_tokens");
  EXPECT_EQ(j["error"]["code"], "invalid_type");
  EXPECT_TRUE(
      json::parse(error_body({500, "x", "server_error", {}, {}}))["error"]["param"].is_null());
  EXPECT_EQ(from_rejection(errc::overloaded, "").status, 429u);
  EXPECT_EQ(from_rejection(errc::timed_out, "").status, 504u);
  EXPECT_EQ(from_rejection(errc::disconnected, "").status, 503u);
  EXPECT_EQ(from_rejection(errc::invalid_argument, "").status, 400u);
  EXPECT_EQ(from_rejection(errc::failed, "").status, 500u);
}

TEST(OpenaiResponse, ChunksAndWholeAnswersCarryTheirFields) {
  completion_context c{api_kind::chat, "chatcmpl-1", 1700000000, "stories260K", true, {}};
  c.accepted.seed = 42;
  const auto first = json::parse(first_chunk(c, false));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first["baton"]["seed"], 42);
  EXPECT_EQ(json::parse(text_chunk(c, "hi"))["choices"][0]["delta"]["content"], "hi");
  EXPECT_EQ(json::parse(final_chunk(c, "length"))["choices"][0]["finish_reason"], "length");
  const auto usage = json::parse(usage_chunk(c, {5, 7}));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 12);
  c.kind = api_kind::completions;
  const auto whole = json::parse(whole_answer(c, "text", "stop", {1, 2}));
  EXPECT_EQ(whole["object"], "text_completion");
  EXPECT_EQ(whole["choices"][0]["text"], "text");
  EXPECT_EQ(whole["usage"]["completion_tokens"], 2);
}

}  // namespace
}  // namespace baton::frontend
