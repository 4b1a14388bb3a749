"""Drives p402's Responses door (`client.responses`) and embeddings
(`client.embeddings`) with the official `openai` Python SDK, configured
only through OPENAI_BASE_URL, and prints what it saw as JSON for the Rust
test to check."""

import json

from openai import OpenAI

client = OpenAI()
out = {}

native = client.responses.create(model="gpt-4o-mini", input="Say hello", store=False)
out["native"] = {
    "text": native.output_text,
    "input_tokens": native.usage.input_tokens,
    "metadata": native.to_dict().get("p402_metadata"),
}

translated = client.responses.create(
    model="claude-haiku-4-5", instructions="Be brief.", input="Say hello", max_output_tokens=100
)
out["translated"] = {
    "text": translated.output_text,
    "status": translated.status,
    "metadata": translated.to_dict().get("p402_metadata"),
}

events = []
text = ""
with client.responses.stream(model="claude-haiku-4-5", input="Say hello", max_output_tokens=100) as stream:
    for event in stream:
        events.append(event.type)
    final = stream.get_final_response()
out["stream"] = {
    "first": events[0] if events else None,
    "last": events[-1] if events else None,
    "text": final.output_text,
}

embedded = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
out["embeddings"] = {
    "count": len(embedded.data),
    "first": embedded.data[0].embedding,
    "prompt_tokens": embedded.usage.prompt_tokens,
}

print(json.dumps(out))
