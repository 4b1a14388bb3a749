"""Drives p402 with the official `openai` Python SDK, configured only through
OPENAI_BASE_URL and OPENAI_API_KEY, and prints what it saw as JSON for the
Rust test to check."""

import json

from openai import OpenAI

client = OpenAI()
messages = [{"role": "user", "content": "Say hello"}]
out = {}

plain = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=messages,
    extra_body={"p402": {"mode": "cost", "cache": False}},
)
out["plain"] = {
    "content": plain.choices[0].message.content,
    "finish_reason": plain.choices[0].finish_reason,
    "total_tokens": plain.usage.total_tokens,
    "metadata": plain.to_dict().get("p402_metadata"),
}

raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
out["headers"] = {k: v for k, v in raw.headers.items() if k.startswith("x-p402-")}

chunks = list(
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,
        stream=True,
        extra_body={"p402": {"mode": "cost"}},
    )
)
out["stream"] = {
    "content": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
    "finish_reasons": [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason],
    "usage_chunks": sum(1 for c in chunks if c.usage is not None),
    "metadata": chunks[-1].to_dict().get("p402_metadata"),
}

chunks = list(
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
)
usage = [c.usage for c in chunks if c.usage is not None]
out["stream_usage"] = {
    "usage_chunks": len(usage),
    "total_tokens": usage[0].total_tokens if usage else None,
    "metadata": chunks[-1].to_dict().get("p402_metadata"),
}

try:
    client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, extra_body={"p402": {"mode": "cheapest"}}
    )
    out["bad_mode"] = "no error"
except Exception as error:  # the SDK's BadRequestError
    out["bad_mode"] = {"class": type(error).__name__, "status": getattr(error, "status_code", None)}

print(json.dumps(out))
