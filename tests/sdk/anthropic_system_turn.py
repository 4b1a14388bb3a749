"""One request of the official `anthropic` Python SDK with a system-role
message inside `messages` (as Claude Code sends for current models), to
ANTHROPIC_BASE_URL. Prints the answer's text as JSON."""

import json
import os

import anthropic

client = anthropic.Anthropic()
message = client.messages.create(
    model=os.environ.get("P402_MODEL", "claude-sonnet-5-5"),
    max_tokens=256,
    system="You are terse.",
    messages=[
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "system", "content": "The user prefers words to digits."},
        {"role": "user", "content": "And 3 + 3?"},
    ],
)
print(json.dumps({"text": message.content[0].text if message.content else None}))
