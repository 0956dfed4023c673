"""What of a request is embedded for routing.

Chat: the system (and developer) prompt, then the LAST user message with text, joined by a newline.
Only text parts count: images, audio and tool results are not embedded. The system prompt
comes first because router_core keeps the tail of long text: the user's question survives
the cut, the system prompt's start does not.
Completions: the prompt string (a list of strings is joined).
Responses API: the `instructions`, then the `input` read as chat messages (a string input is
the user message).

The model is sent, and bills, more than that: every earlier turn, tool call and tool result,
the tools' definitions, and images. A request's input tokens are estimated from all of it
(`chat_prompt_size`, `responses_prompt_size`, `tools_chars`; an image as the characters of its
tokens), or an agent loop's turn carrying a long tool result would be priced as its short question.
The same walk notes an image, which only a model taking images can answer; tools and a JSON
schema output are told by their fields (`chat_needs`, `responses_needs`).
"""
from __future__ import annotations

from dataclasses import dataclass

import orjson

from app.errors import GatewayError
from router_core.pricing import CHARS_PER_TOKEN

# An image's input tokens as OpenAI bills them, in characters of text (the unit of the estimate):
# "low" detail is a flat 85 tokens, any other 85 plus 170 per 512-pixel tile of the scaled image.
# Its size is not read before routing, so any other is taken as a 1024x1024 image's 765 tokens.
_IMAGE_CHARS_LOW = int(85 * CHARS_PER_TOKEN)
_IMAGE_CHARS = int(765 * CHARS_PER_TOKEN)
# What a request needs of its model when it uses no image, tools nor structured output: anything.
NO_NEEDS: frozenset[str] = frozenset()


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
            # "text" in chat messages; "input_text" in the Responses API's input items, and
            # "output_text" in the answers a client sends back in them (stateless turns)
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text")
            and isinstance(part.get("text"), str)
        )
    return ""


def chat_routing_text(messages: list[dict]) -> str:
    """System/developer prompts, then the last user message that has text: one holding only an
    image (or audio) is asked about in an earlier one ("What is wrong in these screenshots?"),
    which is the question to route on rather than the system prompt alone."""
    system = [content_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")]
    user = ""
    for m in reversed(messages):
        if m.get("role") == "user" and (user := content_text(m.get("content"))):
            break
    return "\n".join(p for p in (*system, user) if p)


def _call_arguments(call: object) -> int:
    """The length of a chat tool call's arguments."""
    function = call.get("function") if isinstance(call, dict) else None
    arguments = function.get("arguments") if isinstance(function, dict) else None
    return len(arguments) if isinstance(arguments, str) else 0


def _image_chars(part: object) -> int:
    """An image part's tokens in characters (chat's `image_url`, the Responses API's
    `input_image`); 0 for any other part."""
    if not isinstance(part, dict) or part.get("type") not in ("image_url", "input_image"):
        return 0
    image = part.get("image_url")
    detail = image.get("detail") if isinstance(image, dict) else part.get("detail")
    return _IMAGE_CHARS_LOW if detail == "low" else _IMAGE_CHARS


@dataclass(slots=True)  # made for every request: slots, not frozen (a frozen one costs more to make)
class PromptSize:
    """What a request's messages (or input items) send the model: characters of text (an image as
    its tokens' characters), and whether an image is among them, which only a model taking images
    (`vision`) can answer. Found in the one walk that counts the characters."""

    chars: int = 0
    images: bool = False

    def add(self, item: dict) -> None:
        """Count a chat message or a Responses API input item: its content (an image as its
        tokens' characters), a tool's output (`function_call_output`) and tool calls' arguments
        (a chat assistant's `tool_calls`, a Responses API `function_call`). Audio and files are
        not counted."""
        content = item.get("content")
        if type(content) is str:
            self.chars += len(content)
        else:
            self.chars += len(content_text(content))
            if isinstance(content, list):
                images = sum(_image_chars(part) for part in content)
                self.chars += images
                self.images = self.images or images > 0
        # Looked for by key first: few items carry them, and this runs for every message of every
        # request (a few microseconds a request otherwise).
        if "output" in item:
            self.chars += len(content_text(item["output"]))
        if "arguments" in item and isinstance(item["arguments"], str):
            self.chars += len(item["arguments"])
        if "tool_calls" in item and isinstance(item["tool_calls"], list):
            self.chars += sum(_call_arguments(call) for call in item["tool_calls"])


def chat_prompt_size(messages: list) -> PromptSize:
    """What a chat request's messages (or a Responses API request's input items) send the
    model, every turn included."""
    size = PromptSize()
    for m in messages:  # a loop, not sum() over a generator: this runs for every request
        if isinstance(m, dict):
            size.add(m)
    return size


def chat_prompt_chars(messages: list) -> int:
    """Characters of text a chat request's messages send the model, every turn included."""
    return chat_prompt_size(messages).chars


def tools_chars(fields: dict) -> int:
    """Characters of the tool definitions a request sends (`tools`; chat's deprecated
    `functions`): the model reads them as input and is billed for them, and an agent's tools
    run to thousands of tokens."""
    chars = 0
    for key in ("tools", "functions"):
        if key in fields and isinstance(fields[key], list):
            chars += len(orjson.dumps(fields[key]))
    return chars


def _token_ids(prompt: list) -> bool:
    """Whether a completions prompt is token ids: integers, or arrays of integers (a batch)."""
    return all(type(t) is int for t in prompt) or all(
        type(p) is list and all(type(t) is int for t in p) for p in prompt)


def completion_routing_text(prompt: object) -> str:
    """The text of a completions `prompt`; token-id prompts cannot be embedded, so they cannot be
    routed. An array holding anything else (a null, an object) is no prompt OpenAI takes: told as
    such, not as token ids a named model would take."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return "\n".join(prompt)
    if isinstance(prompt, list) and _token_ids(prompt):
        raise GatewayError("invalid", "routing needs a text prompt; token-id prompts can only go to a named model",
                           param="prompt", code="unroutable_prompt")
    raise GatewayError("invalid", "prompt: give a string, an array of strings, or token ids (an array of integers, "
                                  "or an array of arrays of integers)", param="prompt", code="invalid_value")


def token_ids_chars(prompt: object) -> int:
    """A completions prompt given as token ids (a list of them, or a batch of lists), as
    characters of text, the unit of the input estimate; 0 for a text prompt, which is counted
    as its text."""
    if not isinstance(prompt, list) or not prompt:
        return 0
    if all(type(t) is int for t in prompt):
        return int(len(prompt) * CHARS_PER_TOKEN)
    return int(sum(len(p) for p in prompt if isinstance(p, list)) * CHARS_PER_TOKEN)


def responses_routing_text(input: object, instructions: str | None) -> str:
    """The instructions, then the input's system/developer messages and its last user message."""
    if isinstance(input, str):
        messages = [{"role": "user", "content": input}]
    elif isinstance(input, list):
        messages = [item for item in input if isinstance(item, dict) and "role" in item]
    else:
        messages = []
    return "\n".join(p for p in (instructions, chat_routing_text(messages)) if p)


def responses_prompt_size(input: object, instructions: str | None) -> PromptSize:
    """What a Responses API request sends the model: its instructions and every input item."""
    if isinstance(input, list):
        size = chat_prompt_size(input)  # its items are counted as chat messages are
    else:
        size = PromptSize(len(input) if isinstance(input, str) else 0)
    size.chars += len(instructions or "")
    return size


def _needs(images: bool, tools: object, output_format: object) -> frozenset[str]:
    """The capabilities (models_registry's CAPABILITIES) a request needs: `vision` for an image,
    `tools` for tool definitions, `json_schema` for an output format of that type."""
    needs = []
    if images:
        needs.append("vision")
    if isinstance(tools, list) and tools:
        needs.append("tools")
    if isinstance(output_format, dict) and output_format.get("type") == "json_schema":
        needs.append("json_schema")
    return frozenset(needs)


def chat_needs(fields: dict, images: bool) -> frozenset[str]:
    """The capabilities a chat request needs of its model (`images`: an image among its messages):
    its `tools` (or deprecated `functions`) and its `response_format`. Most requests carry
    neither: they pay three key lookups."""
    if not images and "tools" not in fields and "functions" not in fields and "response_format" not in fields:
        return NO_NEEDS
    return _needs(images, fields.get("tools") or fields.get("functions"), fields.get("response_format"))


def responses_needs(fields: dict, images: bool) -> frozenset[str]:
    """The capabilities a Responses API request needs of its model (`images`: an image among its
    input items): its `tools` and its output format (`text.format`)."""
    if not images and "tools" not in fields and "text" not in fields:
        return NO_NEEDS
    text = fields.get("text")
    return _needs(images, fields.get("tools"), text.get("format") if isinstance(text, dict) else None)
