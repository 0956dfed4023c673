"""What of a request routing reads (app/routing/prompts.py)."""
from __future__ import annotations

from app.routing.prompts import chat_routing_text, responses_routing_text

SYSTEM = {"role": "system", "content": "You are a careful UI reviewer."}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo"}}


def test_chat_routes_on_the_system_prompt_and_the_last_user_message():
    messages = [SYSTEM, {"role": "user", "content": "Old question"}, {"role": "assistant", "content": "An answer"},
                {"role": "user", "content": [{"type": "text", "text": "New question"}, IMAGE]}]
    assert chat_routing_text(messages) == "You are a careful UI reviewer.\nNew question"


def test_a_last_user_message_holding_only_images_routes_on_the_question_asked_before_it():
    # Before: routed on the system prompt alone, as if nothing had been asked.
    messages = [SYSTEM, {"role": "user", "content": "What is wrong in these screenshots?"},
                {"role": "user", "content": [IMAGE]}, {"role": "user", "content": [IMAGE, {"type": "text", "text": ""}]}]
    assert chat_routing_text(messages) == "You are a careful UI reviewer.\nWhat is wrong in these screenshots?"
    items = [{"role": "user", "content": [{"type": "input_text", "text": "Is this chart right?"}]},
             {"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo"}]}]
    assert responses_routing_text(items, None) == "Is this chart right?"


def test_no_user_text_at_all_routes_on_the_system_prompt():
    assert chat_routing_text([SYSTEM, {"role": "user", "content": [IMAGE]}]) == "You are a careful UI reviewer."
    assert chat_routing_text([{"role": "user", "content": [IMAGE]}]) == ""
