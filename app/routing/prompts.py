"""What of a request is embedded for routing.

Chat: the system (and developer) prompt, then the LAST user message, joined by a newline.
Only text parts count: images, audio and tool results are not embedded. The system prompt
comes first because router_core keeps the tail of long text: the user's question survives
the cut, the system prompt's start does not.
Completions: the prompt string (a list of strings is joined).
Responses API: the `instructions`, then the `input` read as chat messages (a string input is
the user message).
"""
from __future__ import annotations

from app.errors import GatewayError


def content_text(content: object) -> str:
    """The text of a message's `content`: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            # "text" in chat messages, "input_text" in the Responses API's input items
            if isinstance(part, dict) and part.get("type") in ("text", "input_text")
            and isinstance(part.get("text"), str)
        )
    return ""


def chat_routing_text(messages: list[dict]) -> str:
    """System/developer prompts, then the last user message."""
    system = [content_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")]
    user = next((content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    return "\n".join(p for p in (*system, user) if p)


def completion_routing_text(prompt: object) -> str:
    """The text of a completions `prompt`; token-id prompts cannot be embedded, so they cannot be routed."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return "\n".join(prompt)
    raise GatewayError(
        "invalid",
        "routing needs a text prompt; token-id prompts can only go to a named model",
        param="prompt",
        code="unroutable_prompt",
    )


def responses_routing_text(input: object, instructions: str | None) -> str:
    """The instructions, then the input's system/developer messages and its last user message."""
    if isinstance(input, str):
        messages = [{"role": "user", "content": input}]
    elif isinstance(input, list):
        messages = [item for item in input if isinstance(item, dict) and "role" in item]
    else:
        messages = []
    return "\n".join(p for p in (instructions, chat_routing_text(messages)) if p)
