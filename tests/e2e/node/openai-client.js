// The official OpenAI Node client against PRSM's /v1, called as a Node application calls it:
// chat whole and streamed, a JSON Schema answer, a forced tool call, the Responses API whole
// and streamed, and a refused option. Prints one JSON object of what came back; the Python
// test (tests/server/routes/test_openai.py) asserts on it.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.PRSM_BASE_URL,
  apiKey: process.env.PRSM_API_KEY,
  maxRetries: 0,
});
const model = (await client.models.list()).data[0].id;
const question = [{ role: "user", content: "What is the capital of France?" }];
const greedy = { model, max_tokens: 40, temperature: 0 };

const chat = await client.chat.completions.create({ ...greedy, messages: question });
let streamed = "";
const stream = await client.chat.completions.create({ ...greedy, messages: question, stream: true });
for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? "";

const city = {
  type: "object",
  properties: { name: { type: "string" }, country: { type: "string" } },
  required: ["name", "country"],
  additionalProperties: false,
};
const structured = await client.chat.completions.create({
  model,
  max_tokens: 60,
  messages: [{ role: "user", content: "Name a city in France." }],
  response_format: { type: "json_schema", json_schema: { name: "city", strict: true, schema: city } },
});

const weather = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The current weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
    },
  },
};
const called = await client.chat.completions.create({
  model,
  max_tokens: 80,
  messages: [{ role: "user", content: "What is the weather in Oslo?" }],
  tools: [weather],
  tool_choice: "required",
});

const ask = { model, input: "What is the capital of France?", max_output_tokens: 40, temperature: 0, store: false };
const response = await client.responses.create(ask);
const events = [];
const responseStream = client.responses.stream(ask);
for await (const event of responseStream) events.push(event.type);
const final = await responseStream.finalResponse();

let refused = null;
try {
  await client.chat.completions.create({ ...greedy, messages: question, reasoning_effort: "low" });
} catch (error) {
  refused = { status: error.status, code: error.code, param: error.param };
}

console.log(
  JSON.stringify({
    chat: chat.choices[0].message.content,
    streamed,
    structured: JSON.parse(structured.choices[0].message.content),
    call: called.choices[0].message.tool_calls[0].function,
    finish: called.choices[0].finish_reason,
    response: response.output_text,
    events,
    final: final.output_text,
    refused,
  }),
);
