"""Drives p402 with LangChain's ChatOpenAI (langchain-openai), configured only
through OPENAI_BASE_URL and OPENAI_API_KEY, and prints what it saw as JSON
for the Rust test to check. P402_SESSION names a session to charge through
`extra_body`."""

import json
import os

from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI

ask = [HumanMessage("Say hello")]
out = {}


def headers(message):
    """The x-p402-* response headers LangChain kept (include_response_headers)."""
    kept = message.response_metadata.get("headers") or {}
    return {k: v for k, v in kept.items() if k.startswith("x-p402-")}


def streamed(model, **kwargs):
    """Streams one answer and sums its chunks as LangChain users do."""
    total = None
    count = 0
    for chunk in model.stream(ask, **kwargs):
        total = chunk if total is None else total + chunk
        count += 1
    return {
        "content": total.content,
        "chunks": count,
        "usage": total.usage_metadata,
        "finish_reason": total.response_metadata.get("finish_reason"),
        "headers": headers(total),
    }


# Session charged through extra_body: the `p402` object rides in the body.
chat = ChatOpenAI(
    model="gpt-4o-mini",
    include_response_headers=True,
    max_retries=0,
    extra_body={"p402": {"session_id": os.environ["P402_SESSION"]}},
)
# With OPENAI_BASE_URL set, LangChain leaves stream_usage off by default.
out["default_stream_usage"] = chat.stream_usage

answer = chat.invoke(ask)
out["invoke"] = {
    "content": answer.content,
    "usage": answer.usage_metadata,
    "finish_reason": answer.response_metadata.get("finish_reason"),
    "model_name": answer.response_metadata.get("model_name"),
    "headers": headers(answer),
}

out["stream_default"] = streamed(chat)
out["stream_usage"] = streamed(ChatOpenAI(model="gpt-4o-mini", stream_usage=True, max_retries=0,
                                          include_response_headers=True))

weather = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
called = ChatOpenAI(model="gpt-4o-mini", max_retries=0).bind_tools([weather]).invoke("Weather in Paris?")
out["tool"] = {
    "calls": [{"name": c["name"], "args": c["args"], "id": c["id"]} for c in called.tool_calls],
    "finish_reason": called.response_metadata.get("finish_reason"),
}

print(json.dumps(out))
