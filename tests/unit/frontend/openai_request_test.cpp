// The OpenAI request parser on its own: no sockets. Every field, at every depth, given a
// value of every JSON type, gets a typed answer (a request, or a 4xx naming the field),
// never an exception; the request that once ended the router process among them.
#include "frontend/openai_request.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace baton::frontend {
namespace {

using json = nlohmann::json;

const request_limits limits{"stories260K", 1000, 4096};

/// A value of every JSON type, and the edges of the numeric ones.
std::vector<json> every_type() {
  return {nullptr,
          true,
          false,
          0,
          1,
          -1,
          1.5,
          -0.0,
          1e300,
          18446744073709551615ull,
          -9223372036854775807ll - 1,
          "",
          "x",
          "text",
          json::array(),
          json::array({1}),
          json::array({"a"}),
          json::array({json::object()}),
          json::array({json::array({json::object({{"type", 1}})})}),
          json::object(),
          json::object({{"type", "text"}}),
          json::object({{"type", 1}, {"text", "x"}}),
          json::object({{"role", "user"}, {"content", 5}})};
}

json completion() {
  return {{"model", "stories260K"}, {"prompt", "Once"}};
}
json chat() {
  return {{"model", "stories260K"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}};
}

/// Parses `body`; the answer is a request, or a 4xx whose param is `param` or a field
/// inside it ("messages[0].content[1].type").
void expect_typed_answer(api_kind kind, const json& body, const std::string& param) {
  SCOPED_TRACE(body.dump());
  tl::expected<openai_request, api_error> r;
  ASSERT_NO_THROW(r = parse_openai_request(kind, body.dump(), limits));
  if (r) return;
  EXPECT_GE(r.error().status, 400u);
  EXPECT_LT(r.error().status, 500u);
  EXPECT_FALSE(r.error().message.empty());
  const auto& got = r.error().param;
  EXPECT_TRUE(got == param || got.starts_with(param + "[") || got.starts_with(param + "."))
      << got << " for " << param;
}

TEST(OpenaiRequest, TheContentPartWithANumberTypeIs400NotACrash) {
  const auto body =
      R"({"model":"stories260K","messages":[{"role":"user","content":[{"type":1,"text":"x"}]}]})";
  auto r = parse_openai_request(api_kind::chat, body, limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().status, 400u);
  EXPECT_EQ(r.error().param, "messages[0].content[0].type");
  EXPECT_EQ(r.error().code, "invalid_type");
}

TEST(OpenaiRequest, EveryTopLevelFieldOfEveryTypeGetsATypedAnswer) {
  const std::vector<std::string> completions_fields = {
      "model", "prompt", "echo",           "max_tokens", "temperature", "top_p",
      "seed",  "stream", "stream_options", "stop",       "user"};
  for (const auto& name : completions_fields) {
    for (const auto& value : every_type()) {
      auto body = completion();
      body[name] = value;
      expect_typed_answer(api_kind::completions, body, name);
    }
  }
  const std::vector<std::string> chat_fields = {"model", "messages", "max_tokens", "temperature",
                                                "top_p", "seed",     "stream",     "stream_options",
                                                "stop",  "user"};
  for (const auto& name : chat_fields) {
    for (const auto& value : every_type()) {
      auto body = chat();
      body[name] = value;
      expect_typed_answer(api_kind::chat, body, name);
    }
  }
}

TEST(OpenaiRequest, EveryNestedFieldOfEveryTypeGetsATypedAnswer) {
  for (const auto& value : every_type()) {
    auto body = chat();
    body["messages"][0] = value;
    expect_typed_answer(api_kind::chat, body, "messages");
    for (const char* key : {"role", "content", "name"}) {
      body = chat();
      body["messages"][0][key] = value;
      expect_typed_answer(api_kind::chat, body, "messages");
    }
    body = chat();
    body["messages"][0]["content"] = json::array({value});
    expect_typed_answer(api_kind::chat, body, "messages");
    for (const char* key : {"type", "text"}) {
      body = chat();
      body["messages"][0]["content"] = json::array({{{"type", "text"}, {"text", "x"}}});
      body["messages"][0]["content"][0][key] = value;
      expect_typed_answer(api_kind::chat, body, "messages");
    }
    body = completion();
    body["stream_options"] = {{"include_usage", value}};
    expect_typed_answer(api_kind::completions, body, "stream_options");
    body = completion();
    body["stop"] = json::array({"a", value});
    expect_typed_answer(api_kind::completions, body, "stop");
    body = completion();
    body["prompt"] = json::array({value});
    expect_typed_answer(api_kind::completions, body, "prompt");
  }
}

TEST(OpenaiRequest, BodiesThatAreNotObjectsAre400) {
  for (const char* body : {"", "[", "null", "1", "\"x\"", "[1,2]", "{\"model\":", "\xff\xfe",
                           "{\"model\":\"stories260K\",\"prompt\":\"\xc3\"}"}) {
    auto r = parse_openai_request(api_kind::completions, body, limits);
    ASSERT_FALSE(r) << body;
    EXPECT_EQ(r.error().status, 400u) << body;
  }
}

TEST(OpenaiRequest, DeepNestingIsAnAnswerNotAStackOverflow) {
  std::string deep = R"({"model":"stories260K","prompt":"a","user":)";
  deep += std::string(100'000, '[') + std::string(100'000, ']') + "}";
  auto r = parse_openai_request(api_kind::completions, deep, limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().param, "user");
}

TEST(OpenaiRequest, DefaultsAndValuesReachTheRequest) {
  auto r = parse_openai_request(api_kind::completions, completion().dump(), limits);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->request.prompt, "Once");
  EXPECT_EQ(r->request.params.temperature, 1.0f);
  EXPECT_EQ(r->request.params.top_p, 1.0f);
  EXPECT_FALSE(r->request.has_seed);
  auto body = chat();
  body.update({{"max_tokens", 7},
               {"temperature", 0},
               {"top_p", 0.5},
               {"seed", 9},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}},
               {"stop", "\n"}});
  r = parse_openai_request(api_kind::chat, body.dump(), limits);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->request.prompt, "User: Hi\nAssistant:");
  EXPECT_EQ(r->request.max_tokens, 7u);
  EXPECT_EQ(r->request.params.temperature, 0.0f);
  EXPECT_EQ(r->request.params.top_p, 0.5f);
  EXPECT_TRUE(r->request.has_seed);
  EXPECT_EQ(r->request.params.seed, 9u);
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_EQ(r->stops, std::vector<std::string>{"\n"});
}

TEST(OpenaiRequest, LimitsNameTheirField) {
  auto body = completion();
  body["prompt"] = std::string(5000, 'a');
  auto r = parse_openai_request(api_kind::completions, body.dump(), limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, "context_length_exceeded");
  EXPECT_EQ(r.error().param, "prompt");
  body = completion();
  body["model"] = "gpt-4";
  r = parse_openai_request(api_kind::completions, body.dump(), limits);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().status, 404u);
  EXPECT_EQ(r.error().code, "model_not_found");
}

}  // namespace
}  // namespace baton::frontend
