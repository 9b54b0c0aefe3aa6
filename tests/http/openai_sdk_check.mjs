// Drives a Baton router's HTTP API with the official openai Node.js SDK (v4), the way an
// application would: completions and chat, each non-streamed and streamed. Prints one JSON
// object with what came back; http_cluster_test compares it with the single-process output.
//
//   node openai_sdk_check.mjs SDK_PREFIX BASE_URL MODEL PROMPT MAX_TOKENS SEED
//
// SDK_PREFIX is the folder `npm install --prefix SDK_PREFIX openai@4` filled (tools/setup.sh
// uses build/npm); ES modules ignore NODE_PATH, so the SDK is required from there.
import { createRequire } from 'node:module';
import path from 'node:path';

const [prefix, baseURL, model, prompt, maxTokens, seed] = process.argv.slice(2);
const require = createRequire(path.join(path.resolve(prefix), 'noop.js'));
const OpenAI = require('openai');

const client = new OpenAI({
  baseURL,
  apiKey: process.env.BATON_TEST_API_KEY ?? 'unused',
  maxRetries: 0,
  timeout: 20000,
});
const common = { model, max_tokens: Number(maxTokens), seed: Number(seed), temperature: 0.8, top_p: 0.95 };
const out = {};

const completion = await client.completions.create({ ...common, prompt, echo: true });
out.completion = completion.choices[0].text;
out.completion_finish = completion.choices[0].finish_reason;
out.completion_usage = completion.usage;

let streamed = '';
let usage = null;
const stream = await client.completions.create({
  ...common, prompt, echo: true, stream: true, stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  if (chunk.choices.length > 0) streamed += chunk.choices[0].text;
  if (chunk.usage) usage = chunk.usage;
}
out.completion_stream = streamed;
out.completion_stream_usage = usage;

const messages = [{ role: 'system', content: 'You tell short stories.' }, { role: 'user', content: prompt }];
const chat = await client.chat.completions.create({ ...common, messages });
out.chat = chat.choices[0].message.content;
out.chat_role = chat.choices[0].message.role;
out.chat_finish = chat.choices[0].finish_reason;

let chatStreamed = '';
const chatStream = await client.chat.completions.create({ ...common, messages, stream: true });
for await (const chunk of chatStream) chatStreamed += chunk.choices[0]?.delta?.content ?? '';
out.chat_stream = chatStreamed;

try {
  await client.completions.create({ ...common, prompt, model: 'no-such-model' });
  out.unknown_model_status = 200;
} catch (e) {
  out.unknown_model_status = e.status;
}

const models = await client.models.list();
out.models = models.data.map((m) => m.id);

console.log(JSON.stringify(out));
