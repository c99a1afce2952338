"""Hendrycks' MATH answer equivalence (`is_equiv`): string normalization only, no evaluation.

Re-implemented from the specification in SCORERS.md 1b; the order of the steps matters and is kept.
Where the original raises (an ambiguous unit split, a `\\frac` or `\\sqrt` at the very end), `is_equiv`
falls back to comparing the raw strings, as the original does.
"""

from __future__ import annotations

_PLAIN_DELETIONS = ("\\left", "\\right", "^{\\circ}", "^\\circ", "\\$")


class _Unnormalizable(ValueError):
    """The original normalization would raise here; the caller compares raw strings instead."""


def _keep_left_of_units(text: str) -> str:
    if "\\text{ " not in text:
        return text
    parts = text.split("\\text{ ")
    if len(parts) != 2:
        raise _Unnormalizable("more than one `\\text{ ` unit marker")
    return parts[0]


def _brace_sqrt_arguments(text: str) -> str:
    """`\\sqrt2` -> `\\sqrt{2}`: a single-character argument gets braces."""
    head, *rests = text.split("\\sqrt")
    pieces = [head]
    for rest in rests:
        if not rest:
            raise _Unnormalizable("`\\sqrt` at the end of the string")
        pieces.append("\\sqrt" + (rest if rest[0] == "{" else "{" + rest[0] + "}" + rest[1:]))
    return "".join(pieces)


def _brace_frac_arguments(text: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{7}` -> `\\frac{1}{7}`; a braced numerator is left alone."""
    head, *rests = text.split("\\frac")
    pieces = [head]
    for rest in rests:
        if not rest:
            raise _Unnormalizable("`\\frac` at the end of the string")
        if rest[0] == "{":
            pieces.append("\\frac" + rest)
            continue
        if len(rest) < 2:
            return text
        numerator, second = rest[0], rest[1]
        denominator = second if second == "{" else "{" + second + "}"
        pieces.append("\\frac{" + numerator + "}" + denominator + rest[2:])
    return "".join(pieces)


def _slash_to_frac(text: str) -> str:
    """`3/4` -> `\\frac{3}{4}`, only when both sides are plain integers written canonically."""
    parts = text.split("/")
    if len(parts) != 2:
        return text
    try:
        numerator, denominator = int(parts[0]), int(parts[1])
    except ValueError:
        return text
    if text != f"{numerator}/{denominator}":
        return text
    return f"\\frac{{{numerator}}}{{{denominator}}}"


def strip_string(text: str) -> str:
    """Hendrycks' `_strip_string`. Raises `_Unnormalizable` where the original raises."""
    text = text.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    text = text.replace("tfrac", "frac").replace("dfrac", "frac")
    for fragment in _PLAIN_DELETIONS:
        text = text.replace(fragment, "")
    text = _keep_left_of_units(text)
    text = text.replace("\\%", "")
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        text = sides[1]
    text = _brace_sqrt_arguments(text).replace(" ", "")
    text = _brace_frac_arguments(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _slash_to_frac(text)


def is_equiv(first: str | None, second: str | None) -> bool:
    if first is None or second is None:
        return first is None and second is None
    try:
        return strip_string(first) == strip_string(second)
    except _Unnormalizable:
        return first == second
