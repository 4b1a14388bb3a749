"""The OpenAI Agents SDK (Responses API, its default) on a Claude model
through p402, configured only through OPENAI_BASE_URL: one agent with one
function tool, which writes the file named by P402_PROOF when the model
calls it. Prints the run's final output and what the tool did as JSON."""

import json
import os

from agents import Agent, Runner, function_tool, set_tracing_disabled

set_tracing_disabled(True)
calls = []


@function_tool
def write_proof(text: str) -> str:
    """Write `text` into the proof file."""
    with open(os.environ["P402_PROOF"], "w") as out:
        out.write(text + "\n")
    calls.append(text)
    return "written"


agent = Agent(
    name="prover",
    instructions="Write the proof file with the write_proof tool, then say so.",
    model=os.environ.get("P402_MODEL", "claude-sonnet-5-5"),
    tools=[write_proof],
)
result = Runner.run_sync(agent, "Write the proof file")
print(json.dumps({"final_output": result.final_output, "calls": calls}))
