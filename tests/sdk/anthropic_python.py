"""Drives p402 with the official `anthropic` Python SDK, configured only
through ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY, and prints what it saw as
JSON for the Rust test to check."""

import json

import anthropic

client = anthropic.Anthropic(max_retries=0)
messages = [{"role": "user", "content": "Say hello"}]
out = {}

# Counted by the Anthropic provider that bills the model.
counted = client.messages.count_tokens(model="claude-haiku-4-5", messages=messages)
out["count_tokens"] = counted.input_tokens

raw = client.messages.with_raw_response.create(
    model="claude-haiku-4-5", max_tokens=200, messages=messages
)
message = raw.parse()
out["plain"] = {
    "text": message.content[0].text,
    "stop_reason": message.stop_reason,
    "usage": message.usage.to_dict(),
    "headers": {k: v for k, v in raw.headers.items() if k.startswith("x-p402-")},
}

with client.messages.stream(
    model="claude-haiku-4-5", max_tokens=200, messages=messages
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
out["stream"] = {
    "text": text,
    "stop_reason": final.stop_reason,
    "output_tokens": final.usage.output_tokens,
}

tools = [{
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}]
called = client.messages.create(
    model="claude-haiku-4-5", max_tokens=200, messages=messages, tools=tools
)
out["tools"] = {
    "stop_reason": called.stop_reason,
    "tool": called.content[0].name,
    "input": called.content[0].input,
}

# An OpenAI model, asked in Anthropic's terms: translated both ways.
translated = client.messages.create(model="gpt-4o-mini", max_tokens=200, messages=messages)
out["translated"] = {
    "type": translated.type,
    "text": translated.content[0].text,
    "stop_reason": translated.stop_reason,
}

try:
    client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=200,
        messages=messages,
        extra_body={"p402": {"max_cost": 0.0000001}},
    )
    out["capped"] = "no error"
except anthropic.APIStatusError as e:
    out["capped"] = {"status": e.status_code, "type": e.body["error"]["type"], "code": e.body["error"]["code"]}

print(json.dumps(out))
