"""The prompt that names the classes, and where each class's tokens sit in it."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InputError

PREFIX = "a photograph of"
MAX_CLASSES = 254  # labels are uint8 and a background label may be added


def check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """Class names stripped of surrounding spaces; rejects an empty list, empty names,
    repeats (the same name twice has one set of tokens) and more than uint8 labels hold."""
    if isinstance(classes, str) or not classes:
        raise InputError("give a non-empty list of class names, e.g. ['horse', 'grass', 'sky']")
    names = tuple(" ".join(str(c).split()) for c in classes)
    if any(not n for n in names):
        raise InputError(f"empty class name in {list(classes)}")
    lowered = [n.lower() for n in names]
    repeats = sorted({n for n in lowered if lowered.count(n) > 1})
    if repeats:
        raise InputError(f"class names given more than once: {', '.join(repeats)}")
    if len(names) > MAX_CLASSES:
        raise InputError(f"{len(names)} classes, at most {MAX_CLASSES} are supported")
    return names


def build_prompt(classes: Sequence[str]) -> str:
    """``a photograph of horse, grass and sky``: every class named once, in order."""
    listed = classes[0] if len(classes) == 1 else ", ".join(classes[:-1]) + " and " + classes[-1]
    return f"{PREFIX} {listed}"


def _find(seq: list[int], sub: list[int], start: int) -> int:
    for i in range(start, len(seq) - len(sub) + 1):
        if seq[i:i + len(sub)] == sub:
            return i
    return -1


def prompt_ids(tokenizer, prompt: str, max_length: int) -> list[int]:
    """The prompt's token ids with its start and end tokens, never truncated; a prompt longer
    than the text encoder's ``max_length`` is an error here, before any U-Net pass, rather
    than a class silently cut off (the encoder truncates) or a later failure."""
    # verbose=False: the tokenizer's own "longer than the maximum" warning would repeat ours
    ids = list(tokenizer(prompt, add_special_tokens=True, verbose=False).input_ids)
    if len(ids) > max_length:
        raise InputError(f"the prompt '{prompt}' has {len(ids)} tokens, longer than the text "
                         f"encoder's limit of {max_length}; use fewer or shorter class "
                         f"names")  # fmt: skip
    return ids


def token_groups(
    tokenizer, prompt: str, classes: Sequence[str], max_length: int,
) -> list[list[int]]:
    """For each class, the positions of its tokens in the tokenized ``prompt`` (with its
    start token, as the text encoder sees it).

    Each class is tokenized alone and its token sequence is searched in the prompt's,
    left to right from after the prefix and after the previous class, so a class whose
    tokens also occur in an earlier word (``sea`` after ``sea lion``) still gets its own
    occurrence. A prompt longer than the encoder's ``max_length`` is an error.
    """
    ids = prompt_ids(tokenizer, prompt, max_length)  # so every class below fits in it
    prefix = tokenizer(PREFIX, add_special_tokens=False).input_ids
    start = 1 + len(prefix)  # after the start token and the prefix
    groups = []
    for name in classes:
        sub = list(tokenizer(name, add_special_tokens=False).input_ids)
        if not sub:
            raise InputError(f"class name '{name}' gives no tokens")
        at = _find(ids, sub, start)
        if at < 0:  # tokenization depends on context only at word boundaries; unlikely
            raise InputError(f"class name '{name}' was not found in the prompt '{prompt}'")
        groups.append(list(range(at, at + len(sub))))
        start = at + len(sub)
    return groups
