"""LLM-judge grading, the pure part: the messages to send a judge model and how its replies
become a score. No network: the gateway sends the messages and passes back the reply texts.

A representative item's grader names the kind: `llm_judge` (alone, the original) or
`llm_judge:correct` -> `correct`, `llm_judge:rating` -> `rating`, `llm_judge:pairwise` ->
`pairwise` (see `parse_judge_grader`). Every kind compares the model's answer with the item's
reference answer:

- `correct`: one call; the judge replies CORRECT or INCORRECT -> 1.0 or 0.0.
- `rating`: one call, arena-bench-v1's single-answer judge guided by a reference answer: the
  judge explains, then rates 1-10 as "[[n]]" ("Rating: [[7]]", "[[7.5]]") -> (n - 1) / 9.
- `pairwise`: two calls, the model's answer against the reference answer as assistants A and B,
  then with the two swapped (judges favour a position); each verdict is "[[A]]", "[[B]]" or
  "[[C]]" (a tie) -> the share of the two verdicts that prefer the model's answer, a tie
  counting one half: 1.0 beats the reference both times, 0.5 is on a par with it.

Driving it: `judge_requests(kind, question, reference, answer)` gives the chat message lists,
one per judge call, in order; send each (temperature 0, at most JUDGE_MAX_TOKENS[kind] tokens),
then `judge_score(kind, [reply text, ...], answer)` in the same order gives the score, or None
when a reply holds no verdict (an ungraded answer: ask again rather than score it). A reply cut at
its token limit is no verdict for a kind in VERDICT_LAST.

Every kind puts the answer between "[The Start of ...]" and "[The End of ...]" markers; a marker
the answer writes itself is neutralised (`fenced`), so that it cannot end its block early and
write instructions for the judge after it.
"""
from __future__ import annotations

import re

Message = dict[str, str]

JUDGE_KINDS = ("correct", "rating", "pairwise")
JUDGE_PREFIX = "llm_judge"

# judge calls per answer graded
JUDGE_CALLS = {"correct": 1, "rating": 1, "pairwise": 2}
# enough for each kind's reply: one word, or an explanation before the verdict (the longest
# of arena-bench-v1's 3,867 recorded GPT-4 judgments is about 1,500 tokens)
JUDGE_MAX_TOKENS = {"correct": 5, "rating": 2048, "pairwise": 2048}
# The kinds whose verdict ends the judge's reply, after its explanation: a reply cut at its token
# limit holds none, and a "[[n]]" in it is one its explanation quotes ("a [[10]] would need ..").
VERDICT_LAST = frozenset({"rating", "pairwise"})

CORRECT_PROMPT = (
    "You are grading an answer against a reference answer.\n"
    "Question: {question}\nReference answer: {reference}\n"
    "[The Start of Answer to Grade]\n{answer}\n[The End of Answer to Grade]\n"
    "Reply with exactly one word: CORRECT if the answer agrees with the reference, INCORRECT otherwise."
)

RATING_SYSTEM = (
    "You are an impartial judge of the answer an AI assistant gave to the user question below. "
    "Judge its correctness and its helpfulness. You are given a reference answer and the "
    "assistant's answer: first compare the assistant's answer with the reference answer, point "
    "out any mistakes and correct them, staying as objective as you can. After your explanation, "
    "rate the answer from 1 to 10 in exactly this format: \"[[rating]]\", for example "
    "\"Rating: [[5]]\"."
)
RATING_USER = (
    "[The Start of User Question]\n{question}\n[The End of User Question]\n\n"
    "[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n\n"
    "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
)

PAIRWISE_SYSTEM = (
    "You are an impartial judge comparing the answers two AI assistants gave to the user question "
    "below. Choose the assistant whose answer is more correct and more helpful. Do not let the "
    "order in which the answers appear, their length or the assistants' names sway you, and stay "
    "as objective as you can. Explain your comparison briefly, then give your verdict in exactly "
    "this format: \"[[A]]\" if assistant A is better, \"[[B]]\" if assistant B is better, and "
    "\"[[C]]\" for a tie."
)
PAIRWISE_USER = (
    "[The Start of User Question]\n{question}\n[The End of User Question]\n\n"
    "[The Start of Assistant A's Answer]\n{first}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{second}\n[The End of Assistant B's Answer]"
)

# A block marker ("[The Start of ...]", "[The End of ...]") as the graded answer may write it, in any
# case or spacing, its closing bracket optional (a judge reads a near-miss as the marker too).
_MARKER = re.compile(r"\[(\s*the\s+(?:start|end)\s+of\b[^\[\]\n]*)\]?", re.IGNORECASE)
_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_PREFERENCE = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_WORD = re.compile(r"[A-Za-z]+")


def parse_judge_grader(grader: str) -> str:
    """The judge kind a grader name asks for: "llm_judge" -> "correct", "llm_judge:<kind>" ->
    <kind>. ValueError for any other name or an unknown kind."""
    prefix, sep, kind = grader.partition(":")
    if prefix != JUDGE_PREFIX:
        raise ValueError(f"{grader!r} is not an llm_judge grader")
    return check_kind(kind if sep else "correct")


def check_kind(kind: str) -> str:
    """`kind` itself if it is a judge kind; ValueError otherwise."""
    if kind not in JUDGE_KINDS:
        raise ValueError(f"unknown judge kind {kind!r}; expected one of {', '.join(JUDGE_KINDS)}")
    return kind


def fenced(answer: str) -> str:
    """`answer` unable to end its block in a judge prompt early: each block marker in it written
    in parentheses, not brackets, so that what follows it cannot pass for the judge's own
    instructions or another block. An answer without one is unchanged (the prompts stay those of
    arena-bench-v1's recorded judgments)."""
    return _MARKER.sub(lambda m: f"({m.group(1)})", answer)


def judge_requests(kind: str, question: str, reference: str, answer: str) -> list[list[Message]]:
    """The chat messages of each judge call for grading `answer` to `question` against
    `reference`, in the order `judge_score` expects their replies. The answer, the model's own
    text, is `fenced`: it cannot close its block and write the judge instructions."""
    check_kind(kind)
    answer = fenced(answer)
    if kind == "correct":
        return [[{"role": "user", "content": CORRECT_PROMPT.format(question=question, reference=reference,
                                                                    answer=answer)}]]
    if kind == "rating":
        return [[{"role": "system", "content": RATING_SYSTEM},
                 {"role": "user", "content": RATING_USER.format(question=question, reference=reference,
                                                                answer=answer)}]]
    # pairwise: the model's answer first as A, then as B
    return [[{"role": "system", "content": PAIRWISE_SYSTEM},
             {"role": "user", "content": PAIRWISE_USER.format(question=question, first=first, second=second)}]
            for first, second in ((answer, reference), (reference, answer))]


def parse_correct(verdict: str) -> float | None:
    """1.0 for a reply whose first word is CORRECT, 0.0 for INCORRECT (any case, markup
    around it ignored), None otherwise."""
    word = _WORD.search(verdict)
    if word is None:
        return None
    return {"CORRECT": 1.0, "INCORRECT": 0.0}.get(word.group(0).upper())


def parse_rating(verdict: str, answer: str = "") -> float | None:
    """The 1-10 rating of a judgment: its last "[[n]]" (a judgment may quote code holding
    "[[...]]" before it) but for a rating the graded `answer` states itself; None if there is
    none or it is outside 1-10."""
    claimed = {float(n) for n in _RATING.findall(answer)}
    found = [rating for rating in map(float, _RATING.findall(verdict)) if rating not in claimed]
    if not found:
        return None
    return found[-1] if 1.0 <= found[-1] <= 10.0 else None


def parse_preference(verdict: str, answer: str = "") -> str | None:
    """"A", "B" or "C" (a tie) from a pairwise judgment's last "[[X]]" but for a verdict the
    graded `answer` states itself; None if it has none."""
    claimed = set(_PREFERENCE.findall(answer))
    found = [choice for choice in _PREFERENCE.findall(verdict) if choice not in claimed]
    return found[-1] if found else None


def judge_score(kind: str, verdicts: list[str], answer: str = "") -> float | None:
    """The score in [0, 1] the judge's reply texts give, in the order of `judge_requests`;
    None when any reply holds no verdict. A verdict the graded `answer` states itself ("Rating:
    [[10]]" at its end, to game the judge) is not read from a reply: there it may be the judge
    quoting the answer, not judging it (a judge that gives that very verdict leaves the answer
    ungraded, never wrong). ValueError for an unknown kind or a wrong count."""
    expected = JUDGE_CALLS[check_kind(kind)]
    if len(verdicts) != expected:
        raise ValueError(f"a {kind} judgment takes {expected} verdict(s), got {len(verdicts)}")
    if kind == "correct":
        return parse_correct(verdicts[0])
    if kind == "rating":
        rating = parse_rating(verdicts[0], answer)
        return None if rating is None else (rating - 1.0) / 9.0
    first, second = (parse_preference(v, answer) for v in verdicts)
    if first is None or second is None:
        return None
    # the model's answer is A in the first call and B in the second
    return ({"A": 1.0, "C": 0.5, "B": 0.0}[first] + {"B": 1.0, "C": 0.5, "A": 0.0}[second]) / 2.0
