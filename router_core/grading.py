"""Graders for the representative prompt set: score a model's free-text answer against an
item's reference, 1.0 (correct) or 0.0. Pure functions, no network; `grade` is the entry point.

Graders (the item's "grader" field) and what "reference" holds:

- `mc_letter`: the correct option, a letter A-E ("B") or a number ("2", for sets that number
  their options); the answer's chosen option is read robustly ("B", "B)", "(B)",
  "The answer is B.", "Answer: (C)", "**C**"). An answer listing several options (an echo of
  the question's) chooses none. Given the item's prompt, the answer is also read against the
  option texts of the prompt's last question: a letter followed by another option's text
  ("A) Mary" when A is Rachel) is no clean choice (0.0), and an answer with no letter but
  exactly one option's full text ("Rachel") chooses that option.
- `exact`: the expected text; compared after lower-casing, dropping punctuation and
  collapsing whitespace.
- `numeric`: the expected number ("42", "-3.5", "1,000", "3/4"), optionally with a relative
  tolerance after a bar: "42|0.01" accepts 41.58..42.42. Without one the tolerance is 1e-6
  (equal up to float formatting). A worked solution ending "#### 42" (GSM8K's answers) is
  read as its number after "####". The answer's number is the one after an explicit marker
  ("answer is", "answer:", "####", "\\boxed{...}") if there is one, else its last number
  (worked solutions end with the result).
- `regex`: a Python regular expression searched anywhere in the answer, as given (use an
  inline flag such as "(?i)" to ignore case).
- `code_tests`: Python test code run after the answer's code, in the sandbox
  (`router_core.sandbox`); 1.0 only if every test passes. Build it with
  `humaneval_reference(test, entry_point)` (HumanEval's `check` function, then
  `check(<entry_point>)`) or `mbpp_reference(asserts, setup)` (MBPP's assert lines). The code
  is read from the answer's markdown fences (`extract_code`); for HumanEval, given the prompt
  (the signature and docstring), an answer that is only the function's body is completed with
  it (`code_program`). Runs a process for up to the sandbox's wall time: from async code, call
  `grade` in a worker thread.

`llm_judge` items (`llm_judge`, `llm_judge:rating`, `llm_judge:pairwise`, `llm_judge:correct`)
need a judge model, so the gateway grades them with `router_core.judging`; `grade` refuses them.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable

from router_core import sandbox
from router_core.sandbox import DEFAULT_LIMITS, Limits

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
# an option written at the start of a line: "A) text", "A. text", "(A) text"
_OPTION_LINE = re.compile(rf"^[ \t]*(?:\(([{LETTERS}1-9])\)|([{LETTERS}1-9])[).])[ \t]*(.*?)[ \t]*$", re.MULTILINE)


def prompt_options(prompt: str, numbered: bool = False) -> dict[str, str]:
    """The options of a prompt's last question, {label: text}: the last run of consecutive
    lines labelled A), B), ... (or 1), 2), ... with `numbered`) in order from the first label.
    Few-shot prompts list every example's options; only the last run is the question asked.
    Empty when the prompt lists fewer than two options."""
    labels = "123456789" if numbered else LETTERS
    runs: list[dict[str, str]] = []
    run: dict[str, str] = {}
    for line in prompt.splitlines():
        m = _OPTION_LINE.fullmatch(line)
        label = (m.group(1) or m.group(2)) if m else None
        if label == labels[0]:
            run = {label: m.group(3)}
            runs.append(run)
        elif label and run and len(run) < len(labels) and label == labels[len(run)]:
            run[label] = m.group(3)
        else:
            run = {}
    return next((r for r in reversed(runs) if len(r) >= 2), {})


def _lists_options(text: str, numbered: bool) -> bool:
    """Whether `text` has lines starting with two or more different option labels ("A) ...",
    "(B) ..."): an echo of the question's options, which chooses none of them."""
    labels = {m.group(1) or m.group(2) for m in _OPTION_LINE.finditer(text)}
    return len({label for label in labels if label.isdigit() == numbered}) > 1


def _stated_option(text: str, numbered: bool) -> tuple[str, int] | None:
    """The option `text` states, with where its label ends; None if it states none."""
    whole = re.fullmatch(r"\W*(\w)\W*", text)
    if whole and (whole.group(1).isdigit() if numbered else whole.group(1).upper() in LETTERS):
        return whole.group(1).upper(), whole.end(1)
    explicit, leading, anywhere = _DIGIT_PATTERNS if numbered else _LETTER_PATTERNS
    found = list(explicit.finditer(text))
    if found:
        return found[-1].group(1), found[-1].end(1)
    if _lists_options(text, numbered):
        return None
    match = leading.match(text) or next(reversed(list(anywhere.finditer(text))), None)
    return (match.group(1), match.end(1)) if match else None


def _option_named_by(text: str, options: dict[str, str]) -> str | None:
    """The option whose full text `text` starts with (the longest, should several fit)."""
    said = _normalise(text)
    fits = [(len(t), label) for label, t in ((lb, _normalise(t)) for lb, t in options.items())
            if t and (said == t or said.startswith(t + " "))]
    return max(fits)[1] if fits else None


def _option_by_text(text: str, options: dict[str, str]) -> str | None:
    """The one option whose full text appears in `text` (as whole words); None if none or several."""
    said = f" {_normalise(text)} "
    found = [label for label, t in options.items() if _normalise(t) and f" {_normalise(t)} " in said]
    return found[0] if len(found) == 1 else None


def chosen_option(answer: str, numbered: bool = False, options: dict[str, str] | None = None) -> str | None:
    """The option an answer chooses: a letter A-E, or with `numbered` a digit 1-9; None if
    it names none. A lower-case letter counts alone ("b") or in parentheses ("(b)"). An
    answer listing several options ("A) Rachel\nB) Patricia") chooses none.

    With the question's `options` ({label: text}, see `prompt_options`): a label followed
    by another option's text rather than its own ("A) Patricia" when A is Rachel) is no
    clean choice (None), and an answer naming no label but exactly one option's full text
    ("Patricia") chooses that option."""
    # a lower-case letter in parentheses, "(b)", is as clear as "(B)"
    text = _PAREN_LOWER.sub(lambda m: m.group(0).upper(), answer.strip())
    stated = _stated_option(text, numbered)
    if not options:
        return stated[0] if stated else None
    if stated is None:
        return None if _lists_options(text, numbered) else _option_by_text(text, options)
    label, end = stated
    # only the rest of the label's own line can name its text ("B) Patricia")
    named = _option_named_by(text[end:].split("\n", 1)[0], options)
    return None if named is not None and named != label else label


def mc_letter(answer: str, reference: str, prompt: str | None = None) -> float:
    """1.0 if the answer chooses the reference option (a letter A-E or a digit). With the
    item's `prompt`, the answer is also read against the question's option texts (see
    `chosen_option`)."""
    ref = reference.strip().strip("()[].").upper()
    if not (len(ref) == 1 and (ref in LETTERS or ref.isdigit())):
        raise ValueError(f"mc_letter reference must be one option letter A-E or digit, got {reference!r}")
    numbered = ref.isdigit()
    options = prompt_options(prompt, numbered) if prompt else None
    return float(chosen_option(answer, numbered, options) == ref)


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
    (reference "42", "42|0.01", or a worked solution ending "#### 42"; see the module
    docstring for which number of the answer is read)."""
    # a GSM8K-style solution: its result is what follows the last "####"
    value, _, tol = reference.rpartition("####")[2].partition("|")
    try:
        expected = _to_float(value.strip())
        rel_tol = float(tol) if tol.strip() else DEFAULT_REL_TOL
    except ValueError:
        raise ValueError(f"numeric reference must be a number with an optional '|tolerance' "
                         f"(or a solution ending '#### <number>'), got {reference!r}") from None
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


_FENCE = re.compile(r"^([ \t]*)```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.MULTILINE)
_PYTHON_TAGS = re.compile(r"\[PYTHON\]\n?(.*?)(?:\[/PYTHON\]|\Z)", re.DOTALL)  # code-llama's markup
_CODE_LANGUAGES = {"", "python", "python3", "py"}
_CHECK_CALL = re.compile(r"^check\((\w+)\)\s*\Z", re.MULTILINE)
_IMPORT_LINE = re.compile(r"^(?:from\s+\S+\s+)?import\s.*$", re.MULTILINE)


def extract_code(text: str) -> str:
    """The Python code of a model's answer: its ```python / ```py / untagged markdown fences
    (an unclosed last fence runs to the end), joined in order; else its [PYTHON]...[/PYTHON]
    blocks; else the whole text. Fences of other languages are left out. Leading indentation
    is kept (a HumanEval answer may be an indented function body)."""
    blocks = []
    for m in _FENCE.finditer(text):
        indent, language, body = m.groups()
        if language.lower() in _CODE_LANGUAGES:
            # a fence indented inside a list item indents its code by as much
            blocks.append(re.sub(rf"(?m)^{re.escape(indent)}", "", body) if indent else body)
    if not blocks:
        blocks = _PYTHON_TAGS.findall(text)
    code = "\n\n".join(blocks) if blocks else text
    return code.lstrip("\r\n").rstrip()


def humaneval_reference(test: str, entry_point: str) -> str:
    """The `code_tests` reference of a HumanEval item: its `test` (which defines
    `check(candidate)`) followed by `check(<entry_point>)`."""
    if not entry_point.isidentifier():
        raise ValueError(f"entry_point must be a Python identifier, got {entry_point!r}")
    return f"{test.rstrip()}\n\n\ncheck({entry_point})\n"


def mbpp_reference(asserts: list[str], setup: str = "") -> str:
    """The `code_tests` reference of an MBPP item: its `test_setup_code` (if any), then its
    assert lines."""
    if not asserts:
        raise ValueError("an MBPP reference needs at least one assert")
    return "\n".join([setup.rstrip(), *(a.strip() for a in asserts)]).lstrip("\n") + "\n"


def asserts_in(prompt: str) -> list[str]:
    """The assert lines a prompt shows (MBPP prompts in RouterDC's format quote one), for
    `mbpp_reference`."""
    return [line.strip() for line in prompt.splitlines() if line.strip().startswith("assert ")]


def _compiles(code: str) -> bool:
    try:
        compile(code, "<code>", "exec")  # parses only: nothing runs
    except (SyntaxError, ValueError):
        return False
    return True


def code_program(answer: str, reference: str, prompt: str | None = None) -> str:
    """The program `code_tests` runs: the answer's code, then the reference's tests. For a
    HumanEval reference (ending `check(<entry_point>)`) with its prompt (the signature and
    docstring), an answer that does not define the entry point is a function body and
    follows the prompt; one that does is preceded by the prompt too when the prompt is valid
    Python on its own (for its imports and helper functions)."""
    code = extract_code(answer)
    entry = _CHECK_CALL.search(reference.rstrip())
    if entry and prompt:
        head = extract_code(prompt)
        defines = re.search(rf"^(?:async\s+)?def\s+{re.escape(entry.group(1))}\s*\(", code, re.MULTILINE)
        if not defines:
            code = f"{head}\n{code}"
        elif _compiles(head):
            code = f"{head}\n\n{code}"
        else:
            code = "\n".join([*_IMPORT_LINE.findall(head), code])
    return f"{code}\n\n\n{reference}"


def code_tests(answer: str, reference: str, prompt: str | None = None, limits: Limits = DEFAULT_LIMITS) -> float:
    """1.0 if the answer's code passes the reference's tests in the sandbox (see
    `code_program` and `router_core.sandbox`). Blocks while the code runs (up to
    `limits.wall_s`). An answer with no code scores 0.0 without running anything."""
    if not reference.strip() or not _compiles(reference):
        raise ValueError(f"code_tests reference must be Python test code, got {reference[:80]!r}")
    if not extract_code(answer):
        return 0.0
    return float(sandbox.run(code_program(answer, reference, prompt), limits).passed)


# every grader takes (answer, reference, prompt); those that do not read the prompt ignore it
GRADERS: dict[str, Callable[[str, str, str | None], float]] = {
    "mc_letter": mc_letter,
    "exact": lambda answer, reference, _prompt: exact(answer, reference),
    "numeric": lambda answer, reference, _prompt: numeric(answer, reference),
    "regex": lambda answer, reference, _prompt: regex(answer, reference),
    "code_tests": code_tests,
}


def grade(grader: str, answer: str, reference: str, prompt: str | None = None) -> float:
    """Score `answer` against `reference` with the named grader: 1.0 correct, 0.0 not.
    `prompt` is the item's prompt: `mc_letter` reads the question's options from it and
    `code_tests` completes a function body with it; the other graders ignore it. Raises
    ValueError for an unknown grader or a malformed reference."""
    try:
        fn = GRADERS[grader]
    except KeyError:
        hint = " (llm_judge needs a judge model: the gateway grades those)" if grader.startswith("llm_judge") else ""
        raise ValueError(f"unknown grader {grader!r}{hint}; expected one of {', '.join(GRADERS)}") from None
    return fn(answer, reference, prompt)
