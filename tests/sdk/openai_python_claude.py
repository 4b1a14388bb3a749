"""The official `openai` Python SDK talking to Claude through p402: plain and
streamed chat, and tool calls plain and streamed. Prints JSON for the Rust
test to check."""

import json

from openai import OpenAI

client = OpenAI()
model = "claude-test"
tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]
ask = [{"role": "user", "content": "Weather in Paris?"}]
out = {}

plain = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello"}])
out["plain"] = {"content": plain.choices[0].message.content, "provider": plain.to_dict()["p402_metadata"]["provider"]}

text = "".join(
    c.choices[0].delta.content or ""
    for c in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello"}], stream=True
    )
    if c.choices
)
out["stream"] = text

called = client.chat.completions.create(model=model, messages=ask, tools=tools, tool_choice="auto")
call = called.choices[0].message.tool_calls[0]
out["tool"] = {
    "name": call.function.name,
    "arguments": json.loads(call.function.arguments),
    "finish_reason": called.choices[0].finish_reason,
}

# Send the tool result back, as an agent would, in a second turn.
second = client.chat.completions.create(
    model=model,
    messages=ask + [called.choices[0].message.to_dict(), {"role": "tool", "tool_call_id": call.id, "content": "18C, sunny"}],
    tools=tools,
)
out["second_turn_finish"] = second.choices[0].finish_reason

arguments, name = "", None
for chunk in client.chat.completions.create(model=model, messages=ask, tools=tools, stream=True,
                                            stream_options={"include_usage": True}):
    if chunk.choices and chunk.choices[0].delta.tool_calls:
        delta = chunk.choices[0].delta.tool_calls[0]
        name = name or delta.function.name
        arguments += delta.function.arguments or ""
    if chunk.usage is not None:
        out["stream_usage_total"] = chunk.usage.total_tokens
out["tool_stream"] = {"name": name, "arguments": json.loads(arguments)}

print(json.dumps(out))
