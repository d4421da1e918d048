"""The README demo's client half: one chat and one tool call against a running deployment through the
`openai` client, printed so a newcomer sees what came back (content, reasoning, parsed tool calls)."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.panel import Panel

from .endpoint import Endpoint, reasoning_of
from .toolsuite import TOOLS


def run(base_url: str, model: str) -> int:
    console = Console()
    ep = Endpoint.from_url(base_url, flag="URL", kind="self-hosted")
    client = ep.openai_client(timeout=120, asynchronous=False)
    chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Tell me a joke."}],
                                          temperature=0, max_tokens=128)
    msg = chat.choices[0].message
    reasoning = reasoning_of(msg)
    console.print(Panel(f"[dim]reasoning:[/dim] {reasoning}\n[bold]content:[/bold] {msg.content}\n"
                        f"[dim]finish_reason={chat.choices[0].finish_reason} usage={chat.usage.model_dump()}[/dim]",
                        title="chat: 'Tell me a joke.'"))
    call = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What's the weather in Paris?"}], tools=TOOLS,
        temperature=0, max_tokens=128, extra_body=ep.thinking_fields(model, False))
    cmsg = call.choices[0].message
    calls = [{"id": c.id, "name": c.function.name, "arguments": json.loads(c.function.arguments)}
             for c in cmsg.tool_calls or []]
    console.print(Panel(f"[bold]tool_calls:[/bold] {json.dumps(calls, indent=2)}\n[dim]content={cmsg.content!r} "
                        f"finish_reason={call.choices[0].finish_reason}[/dim]",
                        title="tool call: 'What's the weather in Paris?' (4 tools offered)"))
    return 0 if calls else 1


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "tiny-k2"))
