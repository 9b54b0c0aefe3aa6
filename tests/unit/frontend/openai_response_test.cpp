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
  completion_context c;
  c.kind = api_kind::chat;
  c.id = "chatcmpl-1";
  c.created = 1700000000;
  c.model = "stories260K";
  c.include_usage = true;
  c.accepted.seed = 42;
  const auto first = json::parse(first_chunk(c, 0, false));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first["baton"]["seed"], 42);
  EXPECT_FALSE(json::parse(first_chunk(c, 1, false)).contains("baton")) << "once, with choice 0";
  EXPECT_EQ(json::parse(text_chunk(c, 0, "hi"))["choices"][0]["delta"]["content"], "hi");
  EXPECT_EQ(json::parse(text_chunk(c, 2, "hi"))["choices"][0]["index"], 2);
  EXPECT_EQ(json::parse(final_chunk(c, 1, "length"))["choices"][0]["finish_reason"], "length");
  const auto usage = json::parse(usage_chunk(c, {5, 7}));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 12);
  c.kind = api_kind::completions;
  const std::vector<choice_answer> answers = {{"text", "stop", {}}, {"other", "length", {}}};
  const auto whole = json::parse(whole_answer(c, answers, {1, 2}));
  EXPECT_EQ(whole["object"], "text_completion");
  ASSERT_EQ(whole["choices"].size(), 2u);
  EXPECT_EQ(whole["choices"][0]["text"], "text");
  EXPECT_EQ(whole["choices"][1]["index"], 1);
  EXPECT_EQ(whole["choices"][1]["finish_reason"], "length");
  EXPECT_TRUE(whole["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(whole["usage"]["completion_tokens"], 2);
}

TEST(OpenaiResponse, LogprobsTakeEachApisShape) {
  const std::vector<wire::client_logprobs> tokens = {
      {10, -0.5f, " once", {{10, -0.5f, " once"}, {11, -1.5f, " twice"}}},
      {12, -0.25f, "\xC3", {{12, -0.25f, "\xC3"}}}};
  completion_context c;
  c.kind = api_kind::chat;
  c.logprobs = true;
  const auto chat = json::parse(text_chunk(c, 0, " once", tokens));
  const auto& content = chat["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0]["token"], " once");
  EXPECT_FLOAT_EQ(content[0]["logprob"].get<float>(), -0.5f);
  EXPECT_EQ(content[0]["top_logprobs"][1]["token"], " twice");
  EXPECT_EQ(content[1]["bytes"], json::array({0xC3})) << "a piece of a character: its bytes";
  c.kind = api_kind::completions;
  const auto legacy = json::parse(text_chunk(c, 0, " once", tokens, 7));
  const auto& lp = legacy["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"][0], " once");
  EXPECT_FLOAT_EQ(lp["token_logprobs"][1].get<float>(), -0.25f);
  EXPECT_FLOAT_EQ(lp["top_logprobs"][0][" twice"].get<float>(), -1.5f);
  EXPECT_EQ(lp["text_offset"], json::array({7, 12}));
}

TEST(OpenaiResponse, StopStringsWaitForMinTokens) {
  text_filter f({"END"});
  bool stopped = false;
  EXPECT_EQ(f.feed("an END", stopped, false), "an END");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(f.feed(" and END", stopped, true), " and ");
  EXPECT_TRUE(stopped);
}

}  // namespace
}  // namespace baton::frontend
