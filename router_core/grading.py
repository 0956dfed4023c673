"""Graders for the representative prompt set: score a model's free-text answer against an
item's reference, 1.0 (correct) or 0.0. Pure functions, no network.

Graders (the item's "grader" field) and what "reference" holds:

- `mc_letter`: the correct option, a letter A-E ("B") or a number ("2", for sets that number
  their options); the answer's chosen option is read robustly ("B", "B)", "(B)",
  "The answer is B.", "Answer: (C)", "**C**").
- `exact`: the expected text; compared after lower-casing, dropping punctuation and
  collapsing whitespace.
- `numeric`: the expected number ("42", "-3.5", "1,000", "3/4"), optionally with a relative
  tolerance after a bar: "42|0.01" accepts 41.58..42.42. Without one the tolerance is 1e-6
  (equal up to float formatting). The answer's number is the one after an explicit marker
  ("answer is", "answer:", "####", "\\boxed{...}") if there is one, else its last number
  (worked solutions end with the result).
- `regex`: a Python regular expression searched anywhere in the answer, as given (use an
  inline flag such as "(?i)" to ignore case).

`llm_judge` items need a judge model, so the gateway grades them; `grade` refuses them.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable

LETTERS = "ABCDE"

DEFAULT_REL_TOL = 1e-6


def _option_patterns(options: str) -> tuple[re.Pattern[str], ...]:
    """Patterns, tried in order, that find the chosen option among `options` (a character class)."""
    opt = f"([{options}])"
    return (
        # an explicit statement; the last one wins, as models restate after reasoning
        re.compile(rf"(?i:\b(?:answer|option|choice)\b)(?:\s+(?i:is|would be|should be))?\s*[:\-]?\s*"
                   rf"[*_`\"'(\[]*{opt}(?!\w)(?![.,]\w)"),
        # the answer opens with the option: "B", "B)", "(B) text", "B. text", "B is right";
        # a lone "A" before a lower-case word other than "is" is the article ("A chart ...")
        re.compile(rf"^[\s*_`\"'(\[]*{opt}(?:[)\].:,*_`\"']|\s*$|\s+(?!(?<=A\s)(?!is\b)[a-z]))"),
        # otherwise an option written as "(B)" or "B)" anywhere; the last one wins
        re.compile(rf"(?<![\w(])\(?{opt}\)(?!\w)"),
    )


_LETTER_PATTERNS = _option_patterns(LETTERS)
_DIGIT_PATTERNS = _option_patterns("1-9")
_PAREN_LOWER = re.compile(rf"\([{LETTERS.lower()}]\)")


def chosen_option(answer: str, numbered: bool = False) -> str | None:
    """The option an answer chooses: a letter A-E, or with `numbered` a digit 1-9; None if
    it names none. A lower-case letter counts alone ("b") or in parentheses ("(b)")."""
    # a lower-case letter in parentheses, "(b)", is as clear as "(B)"
    text = _PAREN_LOWER.sub(lambda m: m.group(0).upper(), answer.strip())
    whole = re.fullmatch(r"\W*(\w)\W*", text)
    if whole and (whole.group(1).isdigit() if numbered else whole.group(1).upper() in LETTERS):
        return whole.group(1).upper()
    explicit, leading, anywhere = _DIGIT_PATTERNS if numbered else _LETTER_PATTERNS
    found = explicit.findall(text)
    if found:
        return found[-1]
    match = leading.match(text)
    if match:
        return match.group(1)
    found = anywhere.findall(text)
    return found[-1] if found else None


def mc_letter(answer: str, reference: str) -> float:
    """1.0 if the answer chooses the reference option (a letter A-E or a digit)."""
    ref = reference.strip().strip("()[].").upper()
    if not (len(ref) == 1 and (ref in LETTERS or ref.isdigit())):
        raise ValueError(f"mc_letter reference must be one option letter A-E or digit, got {reference!r}")
    return float(chosen_option(answer, numbered=ref.isdigit()) == ref)


def _normalise(text: str) -> str:
    kept = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.casefold())
    return " ".join(kept.split())


def exact(answer: str, reference: str) -> float:
    """1.0 if answer and reference agree ignoring case, punctuation and whitespace runs."""
    return float(_normalise(answer) == _normalise(reference))


_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?|[-+]?\.\d+"
_NUMBER_RE = re.compile(rf"(?<![\w.])(?:{_NUMBER})")
_MARKED_RE = re.compile(rf"(?:(?i:answer)(?:\s+(?i:is))?\s*[:=]?|####|\\boxed\{{)\s*\$?\s*({_NUMBER})")


def _to_float(token: str) -> float:
    token = token.replace(",", "")
    if "/" in token:
        num, den = token.split("/", 1)
        return float(num) / float(den) if float(den) != 0 else math.nan
    return float(token)


def numeric(answer: str, reference: str) -> float:
    """1.0 if the answer's number is within the relative tolerance of the reference number
    (reference "42" or "42|0.01"; see the module docstring for which number is read)."""
    value, _, tol = reference.partition("|")
    try:
        expected = _to_float(value.strip())
        rel_tol = float(tol) if tol.strip() else DEFAULT_REL_TOL
    except ValueError:
        raise ValueError(f"numeric reference must be a number with an optional '|tolerance', got {reference!r}") from None
    marked = _MARKED_RE.findall(answer)
    numbers = marked or _NUMBER_RE.findall(answer)
    if not numbers:
        return 0.0
    got = _to_float(numbers[-1])
    return float(math.isclose(got, expected, rel_tol=rel_tol, abs_tol=1e-12))


def regex(answer: str, reference: str) -> float:
    """1.0 if the reference regular expression is found in the answer."""
    try:
        pattern = re.compile(reference)
    except re.error as exc:
        raise ValueError(f"regex reference {reference!r} is not a valid regular expression: {exc}") from None
    return float(pattern.search(answer) is not None)


GRADERS: dict[str, Callable[[str, str], float]] = {
    "mc_letter": mc_letter,
    "exact": exact,
    "numeric": numeric,
    "regex": regex,
}


def grade(grader: str, answer: str, reference: str) -> float:
    """Score `answer` against `reference` with the named grader: 1.0 correct, 0.0 not."""
    try:
        fn = GRADERS[grader]
    except KeyError:
        hint = " (llm_judge needs a judge model: the gateway grades those)" if grader == "llm_judge" else ""
        raise ValueError(f"unknown grader {grader!r}{hint}; expected one of {', '.join(GRADERS)}") from None
    return fn(answer, reference)
