"""The TabMWP scorer: PromptPG's `extract_prediction` and `normalize_answer` (SCORERS.md 2).

Our agents end with `FINAL ANSWER: X` (or `\\boxed{X}`). PromptPG's free-text patterns expect its own
answer format, so a marked free-text answer is read as "The answer is X"; its multiple-choice patterns
(`B`, `(B)`, `B. text`, `(B) text`) expect the bare answer, which they get. Times like `7:25 P.M.` and
units are thus read exactly as PromptPG reads them. A reply without a marker is extracted whole, as
PromptPG does. Departures, all deterministic:
- a marked answer that spells out one of the options (ignoring case and a final period) is that option:
  PromptPG's letter patterns would otherwise read `Al Gore` as option A;
- a letter beyond the listed options (PromptPG picks a random option) falls through to PromptPG's
  word-overlap choice, its rule when no letter is found (so "The answer is Friday" finds Friday);
- a malformed number such as `3/0` (PromptPG's `run_gpt3` raises) is kept as text, as `run_gpt3_rl` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from agenttrain.registry import scorers
from agenttrain.scorers.extraction import marked_answer
from agenttrain.scorers.verdict import Verdict

OPTION_LETTERS = "ABCDEF"

_LETTER_PATTERNS = [
    re.compile(pattern)
    for pattern in (
        r"^\(([A-Za-z])\)$",  # (B)
        r"^([A-Za-z])$",  # B
        r"^([A-Za-z]). ",  # B. text
        r"[Th]he answer is ([A-Z])",  # ...the answer is B
        r"^\(([A-Za-z])\) [\s\S]+$",  # (B) text
        r"[Th]he answer is \(([A-Za-z])\) [\s\S]+$",  # ...the answer is (B) text
    )
]
_NUMBER_TAIL = r"([\-\d\$\.\,\/\:]{0,}[\d]+)"
_FREE_TEXT_PATTERNS = [
    re.compile(pattern)
    for pattern in (
        r"[Th]he answer is ([\s\S]+)$",
        r"[Th]he table shows that ([\d\$\.\,\/\:]+) ",
        r" = ([\d\$\.\,\/\:]+)",
        r"(?<= be| is) " + _NUMBER_TAIL,
        r"(?<= are| was) " + _NUMBER_TAIL,
        r"(?<= were) " + _NUMBER_TAIL,
        r" ([\d\$\.\,\/\:]+ [AP]\.M\.)",
        _NUMBER_TAIL,
    )
]


def _clean(output: str) -> str:
    output = re.sub(r"\$?\\frac\{([\d\.\,\-]+)\}\{([\d\.\,]+)\}\$?", r"\1/\2", output)  # $\frac{a}{b}$ -> a/b
    output = re.sub(r"(?<![AP]\.M)\.$", "", output)
    output = re.sub(r"(?<=\d)[\=](?=[\-\$\d])", " = ", output)
    return output.replace("\u2212", "-")


def _similarity(option: str, output: str) -> float:
    if option == output:
        return 2.0
    if " " not in option and " " not in output:
        return 0.0
    option_words, output_words = option.split(" "), output.split(" ")
    return len(set(option_words) & set(output_words)) / max(len(option_words), len(output_words))


def _choose_option(output: str, options: Sequence[str]) -> str:
    for pattern in _LETTER_PATTERNS:
        found = pattern.findall(output)
        if found and found[0].upper() in OPTION_LETTERS:
            index = OPTION_LETTERS.index(found[0].upper())
            if index < len(options):
                return options[index]
            break
    scores = [_similarity(option, output) for option in options]
    return options[scores.index(max(scores))]


def _free_text_answer(output: str) -> str:
    for pattern in _FREE_TEXT_PATTERNS:
        found = pattern.findall(output)
        if found:
            answer = found[-1].strip()
            return answer[:-1] if answer.endswith(".") and ".M." not in answer else answer
    return output


def extract_prediction(output: str, options: Sequence[str] | None) -> str:
    """PromptPG's reading of a reply: an option text for multiple choice, else the answer phrase."""
    output = _clean(output)
    return _choose_option(output, options) if options else _free_text_answer(output)


def _number_text(text: str) -> str:
    text = text.replace(",", "")
    if re.fullmatch(r"[-+]?\d+", text):
        number: float = int(text)
    elif "/" in text:
        numerator, denominator = text.split("/")[:2]
        number = round(float(numerator) / float(denominator), 3)
    else:
        number = round(float(text), 3)
    return re.sub(r"\.[0]+$", "", str(number))


def normalize_answer(text: str, unit: str | None) -> str:
    """PromptPG's canonical form: numbers rounded to 3 decimals, otherwise the text without its unit."""
    text = re.sub(r"^\$", "", text)
    text = re.sub(r"[,./]$", "", text)
    if re.match(r"^[-+]?[\d,./]+$", text):
        try:
            return _number_text(text)
        except (ValueError, ZeroDivisionError):
            return text
    return text.replace(unit, "").strip() if unit else text


def _spelled_option(answer: str, options: Sequence[str]) -> str | None:
    wanted = answer.strip().removesuffix(".").casefold()
    return next((option for option in options if option.strip().removesuffix(".").casefold() == wanted), None)


def read_prediction(prediction: str, options: Sequence[str] | None) -> str:
    """The answer phrase of a reply, from its `FINAL ANSWER:` / boxed marker when it has one."""
    marked = marked_answer(prediction)
    if marked is None:
        return extract_prediction(prediction, options)
    if not options:
        return extract_prediction(f"The answer is {marked}", options)
    spelled = _spelled_option(marked, options)
    return spelled if spelled is not None else extract_prediction(marked, options)


@scorers.register("tabmwp")
def judge(prediction: str | None, answer: str, fields: Mapping[str, Any]) -> Verdict:
    if prediction is None:
        return Verdict(correct=False, extracted=None)
    unit = fields.get("unit") or None
    extracted = read_prediction(prediction, fields.get("choices") or None)
    correct = normalize_answer(extracted, unit).lower() == normalize_answer(answer, unit).lower()
    return Verdict(correct=correct, extracted=extracted)
