"""The stream loop of OpenAI's own documentation, word for word in its
loop body (`chunk.choices[0].delta.content` on every chunk), through p402
with the official `openai` Python SDK, on the model named by P402_MODEL.
Prints what it read as JSON for the Rust test to check."""

import json
import os

from openai import OpenAI

client = OpenAI()
stream = client.chat.completions.create(
    model=os.environ["P402_MODEL"],
    messages=[{"role": "user", "content": "Say hello"}],
    stream=True,
)
text = ""
metadata = None
chunks = 0
for chunk in stream:
    chunks += 1
    text += chunk.choices[0].delta.content or ""
    metadata = chunk.to_dict().get("p402_metadata") or metadata
print(json.dumps({"text": text, "chunks": chunks, "metadata": metadata}))
