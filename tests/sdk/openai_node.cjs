// Drives p402 with the official `openai` npm package, configured only through
// OPENAI_BASE_URL and OPENAI_API_KEY, and prints what it saw as JSON for the
// Rust test to check. p402's own options go in a top-level `p402` field: the
// SDK sends fields it does not know in the body, as they are.

const OpenAI = require('openai');
const { VERSION } = require('openai/version');

async function main() {
  const client = new OpenAI({ maxRetries: 0 });
  const messages = [{ role: 'user', content: 'Say hello' }];
  const out = { sdk_version: VERSION };

  const plain = await client.chat.completions.create({
    model: 'gpt-4o-mini',
    messages,
    p402: { mode: 'cost', cache: false },
  });
  out.plain = {
    content: plain.choices[0].message.content,
    finish_reason: plain.choices[0].finish_reason,
    total_tokens: plain.usage.total_tokens,
    metadata: plain.p402_metadata,
  };

  const { response } = await client.chat.completions
    .create({ model: 'gpt-4o-mini', messages })
    .withResponse();
  out.headers = Object.fromEntries(
    [...response.headers.entries()].filter(([name]) => name.startsWith('x-p402-')),
  );

  const collect = async (stream) => {
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const choices = chunks.filter((c) => c.choices.length > 0).map((c) => c.choices[0]);
    const usage = chunks.filter((c) => c.usage).map((c) => c.usage);
    return {
      content: choices.map((c) => c.delta.content || '').join(''),
      finish_reasons: choices.filter((c) => c.finish_reason).map((c) => c.finish_reason),
      usage_chunks: usage.length,
      total_tokens: usage.length ? usage[0].total_tokens : null,
      metadata: chunks[chunks.length - 1].p402_metadata,
    };
  };
  out.stream = await collect(
    await client.chat.completions.create({ model: 'gpt-4o-mini', messages, stream: true, p402: { mode: 'cost' } }),
  );
  out.stream_usage = await collect(
    await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages,
      stream: true,
      stream_options: { include_usage: true },
    }),
  );

  const tools = [
    {
      type: 'function',
      function: {
        name: 'get_weather',
        description: 'Weather now',
        parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
      },
    },
  ];
  const ask = [{ role: 'user', content: 'Weather in Paris?' }];
  const called = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: ask, tools });
  const call = called.choices[0].message.tool_calls[0];
  out.tool = {
    id: call.id,
    name: call.function.name,
    arguments: JSON.parse(call.function.arguments),
    finish_reason: called.choices[0].finish_reason,
    provider: called.p402_metadata.provider,
  };

  // The SDK's stream helper assembles streamed tool-call arguments itself.
  const runner = client.chat.completions.stream({ model: 'gpt-4o-mini', messages: ask, tools });
  const final = await runner.finalChatCompletion();
  const streamedCall = final.choices[0].message.tool_calls[0];
  out.tool_stream = {
    name: streamedCall.function.name,
    arguments: JSON.parse(streamedCall.function.arguments),
    finish_reason: final.choices[0].finish_reason,
  };

  try {
    await client.chat.completions.create({ model: 'gpt-4o-mini', messages, p402: { mode: 'cheapest' } });
    out.bad_mode = 'no error';
  } catch (error) {
    out.bad_mode = { class: error.constructor.name, status: error.status, code: error.code };
  }

  console.log(JSON.stringify(out));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
