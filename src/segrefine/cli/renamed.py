"""Old option names, still accepted for one release: ``predict --model`` is
``--segmenter`` now, ``refine --probs`` is ``--masks``, ``cluster IMAGES`` is ``cluster
--images IMAGES``, and so on (the table is in each command's registration).

An old name is rewritten to its new one on the command line before Click parses it, with a
one-line note on stderr. So ``--help`` shows only the current names, the commands' signatures
carry none of the old ones, and dropping an old name later is deleting one table entry.
"""

from __future__ import annotations

from typing import ClassVar

import typer
from typer.core import TyperCommand, TyperOption

__all__ = ["renamed"]


class RenamedOptions(TyperCommand):
    """A command whose retired option names (and retired positional argument) still work."""

    renamed: ClassVar[dict[str, str]] = {}  # old option name -> current one
    positional: ClassVar[str | None] = None  # the option a retired positional argument became

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self.current_names(args))

    def current_names(self, args: list[str]) -> list[str]:
        """``args`` with the old names written as the current ones (a note for each)."""
        takes_value = {opt for p in self.params if isinstance(p, TyperOption)
                       and not p.is_flag for opt in p.opts}  # fmt: skip
        given = {a.partition("=")[0] for a in args}
        want_positional = self.positional is not None and self.positional not in given
        out: list[str] = []
        words = iter(args)
        for arg in words:
            if arg == "--":  # everything after it is an argument, as Click reads it
                out += [arg, *words]
                break
            name, eq, value = arg.partition("=")
            if name in self.renamed:
                self._note(f"'{self.name} {name}' is now '{self.name} {self.renamed[name]}'")
                name = self.renamed[name]
                arg = name + eq + value
            if name in takes_value and not eq:  # the next word is its value, whatever it is
                value_word = next(words, None)
                out += [arg] if value_word is None else [arg, value_word]
            elif want_positional and not arg.startswith("-"):
                self._note(f"'{self.name} {arg}' is now '{self.name} {self.positional} {arg}'")
                out += [self.positional, arg]
                want_positional = False
            else:
                out.append(arg)
        return out

    def _note(self, change: str) -> None:
        typer.echo(f"segrefine: note: {change}; the old form goes in the next release", err=True)


def renamed(options: dict[str, str] | None = None,
            positional: str | None = None) -> type[RenamedOptions]:  # fmt: skip
    """A command class for ``app.command(cls=...)`` that accepts the old option names in
    ``options`` (old -> new) and, with ``positional``, a positional argument as that option."""
    return type("RenamedOptions", (RenamedOptions,),
                {"renamed": dict(options or {}), "positional": positional})  # fmt: skip
