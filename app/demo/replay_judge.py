"""The replay judge: answers an LLM-judge rating request with GPT-4's recorded judgment.

A demo and test tool, not a judge. The replay upstream serves it as the model `replay-judge`
(`JUDGE_MODEL`). It reads the user message of a `rating` request as `router_core.judging`
builds it (`judge_requests("rating", question, reference, answer)`: the question, the reference
and the assistant's answer between `[The Start of ...]` / `[The End of ...]` markers), finds the
recorded arena-bench-v1 answer with that question and that answer text (whitespace runs
collapsed), and replies with GPT-4's recorded judgment of it, which ends in its `[[rating]]`.
So `judging.judge_score("rating", [reply])` is the recorded (rating - 1) / 9.

Anything else gets `NO_VERDICT`, a text holding no verdict of any kind (no `[[...]]`, first word
neither CORRECT nor INCORRECT), so `judge_score` returns None and the answer stays ungraded:
- an answer with no recorded rating: one the recording never saw, or a recorded answer cut by
  `max_tokens` (profiling open-ended items needs room for the longest recorded answers, about
  1,100 tokens at the 99th percentile);
- a `pairwise` or `correct` request, or any other text: no such judgments were recorded.
"""
from __future__ import annotations

import re

from app.demo.arena import ArenaRecords
from app.demo.replay_upstream import normalise_whitespace
from router_core.judging import RATING_USER

JUDGE_MODEL = "replay-judge"
NO_VERDICT = ("No recorded judgment: the replay judge only returns GPT-4's recorded ratings of "
              "recorded arena-bench-v1 answers, and this request is not a rating request for one. "
              "This answer stays ungraded.")

_FIELDS = ("question", "reference", "answer")


def _template_pattern(template: str) -> re.Pattern[str]:
    """A pattern matching `template` with each {field} captured (any text, newlines included)."""
    pattern = re.escape(template)
    for field in _FIELDS:
        pattern = pattern.replace(re.escape("{" + field + "}"), f"(?P<{field}>.*)", 1)
    return re.compile(pattern, re.DOTALL)


_RATING_REQUEST = _template_pattern(RATING_USER)


class ReplayJudge:
    """GPT-4's recorded judgments, found by (question, answer) text."""

    def __init__(self, records: ArenaRecords) -> None:
        self._judgments: dict[tuple[str, str], str] = {}
        for by_id in records.answers.values():
            for pid, recorded in by_id.items():
                if recorded.judgment is not None:
                    key = (normalise_whitespace(records.items[pid].prompt), normalise_whitespace(recorded.answer))
                    # the same answer text from two LLMs was rated alike in the recording
                    self._judgments.setdefault(key, recorded.judgment)

    def reply(self, prompt: str) -> str:
        """The judge's reply to a request whose last user message is `prompt`."""
        found = _RATING_REQUEST.fullmatch(prompt)
        if found is None:
            return NO_VERDICT
        key = (normalise_whitespace(found["question"]), normalise_whitespace(found["answer"]))
        return self._judgments.get(key, NO_VERDICT)
