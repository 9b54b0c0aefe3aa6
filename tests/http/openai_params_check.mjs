// Drives a Baton router's HTTP API with the official openai Node.js SDK (v4) using the
// parameters issue 19 implemented: several choices, penalties, logit_bias and
// log-probabilities, completions and chat, streamed and not. Prints one JSON object;
// http_cluster_test compares every choice with the single-process output.
//
//   node openai_params_check.mjs SDK_PREFIX BASE_URL MODEL PROMPT MAX_TOKENS SEED
import { createRequire } from 'node:module';
import path from 'node:path';

const [prefix, baseURL, model, prompt, maxTokens, seed] = process.argv.slice(2);
const require = createRequire(path.join(path.resolve(prefix), 'noop.js'));
const OpenAI = require('openai');

const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 30000 });
const params = {
  model, max_tokens: Number(maxTokens), seed: Number(seed), temperature: 0.8, top_p: 0.95,
  n: 3, frequency_penalty: 0.5, presence_penalty: 0.3, logit_bias: { 13: 2.5, 29: -100 },
};
const out = {};

const completion = await client.completions.create({ ...params, prompt, logprobs: 2 });
out.completion = completion.choices.map((c) => ({
  index: c.index, text: c.text, finish: c.finish_reason,
  tokens: c.logprobs.tokens.length, top: c.logprobs.top_logprobs.map((t) => Object.keys(t).length),
  sum_first: Object.values(c.logprobs.top_logprobs[0]).map(Math.exp).reduce((a, b) => a + b, 0),
  logprobs: c.logprobs.token_logprobs,
}));
out.completion_usage = completion.usage;

const streamed = ['', '', ''];
const finishes = [null, null, null];
const stream = await client.completions.create({ ...params, prompt, stream: true });
for await (const chunk of stream) {
  for (const c of chunk.choices) {
    streamed[c.index] += c.text;
    if (c.finish_reason) finishes[c.index] = c.finish_reason;
  }
}
out.completion_stream = streamed;
out.completion_stream_finish = finishes;

const messages = [{ role: 'user', content: prompt }];
const chat = await client.chat.completions.create({
  ...params, n: 2, messages, logprobs: true, top_logprobs: 2,
});
out.chat = chat.choices.map((c) => ({
  index: c.index, text: c.message.content, logprobs: c.logprobs.content.length,
  top: c.logprobs.content[0].top_logprobs.length,
}));
const chatStreamed = ['', ''];
let chatLogprobs = 0;
const chatStream = await client.chat.completions.create({
  ...params, n: 2, messages, stream: true, logprobs: true,
});
for await (const chunk of chatStream) {
  for (const c of chunk.choices) {
    chatStreamed[c.index] += c.delta?.content ?? '';
    chatLogprobs += c.logprobs?.content?.length ?? 0;
  }
}
out.chat_stream = chatStreamed;
out.chat_stream_logprobs = chatLogprobs;

try {
  await client.chat.completions.create({
    model, messages, tools: [{ type: 'function', function: { name: 'f', parameters: {} } }],
  });
  out.tools_status = 200;
} catch (e) {
  out.tools_status = e.status;
  out.tools_param = e.param;
}
console.log(JSON.stringify(out));
