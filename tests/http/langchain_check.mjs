// Drives a Baton router's HTTP API with LangChain's JavaScript integration
// (@langchain/openai), the way an application would: ChatOpenAI and OpenAI, each with
// invoke, stream and batch, every option at LangChain's defaults (it sends OpenAI's
// parameters with their default values: frequency_penalty 0, presence_penalty 0, n 1,
// top_p 1, ...). Prints one JSON object; http_cluster_test checks it.
//
//   node langchain_check.mjs SDK_PREFIX BASE_URL MODEL PROMPT MAX_TOKENS
import { createRequire } from 'node:module';
import path from 'node:path';

const [prefix, baseURL, model, prompt, maxTokens] = process.argv.slice(2);
const require = createRequire(path.join(path.resolve(prefix), 'noop.js'));
const { ChatOpenAI, OpenAI } = require('@langchain/openai');

const common = {
  model, temperature: 0, maxTokens: Number(maxTokens), apiKey: 'unused', maxRetries: 0,
  configuration: { baseURL },
};
const out = {};

const chat = new ChatOpenAI(common);
out.chat_invoke = (await chat.invoke(prompt)).content;
let streamed = '';
for await (const chunk of await chat.stream(prompt)) streamed += chunk.content;
out.chat_stream = streamed;
out.chat_batch = (await chat.batch([prompt, prompt])).map((m) => m.content);

const llm = new OpenAI(common);
out.llm_invoke = await llm.invoke(prompt);
let llmStreamed = '';
for await (const chunk of await llm.stream(prompt)) llmStreamed += chunk;
out.llm_stream = llmStreamed;
out.llm_batch = await llm.batch([prompt, prompt]);
console.log(JSON.stringify(out));
