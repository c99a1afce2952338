"""Finding the answer inside a model's reply: the last `\\boxed{..}` or the text after the last `FINAL ANSWER:`.

The marker is matched in any capitalisation (as the agents detect it), and the answer is the rest of its
line, or the next non-empty line when the marker ends its line; markdown emphasis (`**FINAL ANSWER:** 42`)
is ignored. Text after the answer's line (an explanation, a `TERMINATE`) is not part of the answer.

The boxed rules follow Hendrycks' MATH `last_boxed_only_string` / `remove_boxed`: the scan starts at the
last `\\boxed` (else the last `\\fbox`) and ends at the brace that balances the first one. We also unwrap
`\\fbox{..}` (Hendrycks' `remove_boxed` rejects it, which would make such an answer always wrong), and
only when the braced form fails do we try lm-eval's `\\boxed 5` form (text up to the next `$`).
"""

from __future__ import annotations

import re

FINAL_ANSWER_MARKER = re.compile(r"FINAL ANSWER:", re.IGNORECASE)
_BOX_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed_only_string(text: str) -> str | None:
    """The last `\\boxed{...}` (or, without any `\\boxed`, the last `\\fbox{...}`) including the command."""
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
    if start < 0:
        return None
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[start : index + 1]
    return None


def _unwrap(boxed: str) -> str | None:
    for command in _BOX_COMMANDS:
        if boxed.startswith(command + "{") and boxed.endswith("}"):
            return boxed[len(command) + 1 : -1]
    return None


def _space_boxed(text: str) -> str | None:
    """lm-eval's fallback for `\\boxed 5`: the text after the last `\\boxed ` up to the next `$`."""
    start = text.rfind("\\boxed ")
    if start < 0:
        return None
    return text[start + len("\\boxed ") :].split("$")[0]


def last_boxed_content(text: str) -> str | None:
    """The inside of the last boxed answer, or None when there is none."""
    boxed = last_boxed_only_string(text)
    content = _unwrap(boxed) if boxed is not None else None
    return content if content is not None else _space_boxed(text)


def after_final_answer(text: str) -> str | None:
    """The answer stated after the last `FINAL ANSWER:` ("" if nothing follows), or None without a marker."""
    markers = list(FINAL_ANSWER_MARKER.finditer(text))
    if not markers:
        return None
    rest = text[markers[-1].end() :].lstrip(" \t*")
    lines = [line.strip(" \t*") for line in rest.splitlines() if line.strip(" \t*")]
    return lines[0] if lines else ""


def marked_answer(text: str) -> str | None:
    """The answer behind a `FINAL ANSWER:` marker, else inside the last box; None when neither is there."""
    answer = after_final_answer(text)
    return answer if answer is not None else last_boxed_content(text)
