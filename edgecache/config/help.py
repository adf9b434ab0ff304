"""The help of each setting: the docstring under its declaration (read from the source of the
sections' modules, for the example file and its test; the daemon never needs it)."""

from __future__ import annotations

import ast
import inspect
import itertools
from functools import cache

from edgecache.config.declaration import Setting
from edgecache.config.settings import Settings


def help_of(setting: Setting) -> str:
    """`setting`'s docstring, its indentation removed ("" if it has none)."""
    return _docstrings().get(setting.attr, "")


@cache
def _docstrings() -> dict[str, str]:
    found: dict[str, str] = {}
    for part in Settings.__mro__[:-1]:  # Settings and its parts, not object
        for classdef in ast.parse(inspect.getsource(part)).body:
            found |= _attribute_docstrings(classdef)
    return found


def _attribute_docstrings(classdef: ast.stmt) -> dict[str, str]:
    """Each attribute of a class (`name: type = ...`) followed by a string, and that string."""
    found: dict[str, str] = {}
    body = classdef.body if isinstance(classdef, ast.ClassDef) else []
    for field, then in itertools.pairwise(body):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(then, ast.Expr)
            and isinstance(then.value, ast.Constant)
            and isinstance(then.value.value, str)
        ):
            found[field.target.id] = inspect.cleandoc(then.value.value)
    return found
