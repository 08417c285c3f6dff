"""Format options: the readable id of an option set, and the type check of every option."""
from __future__ import annotations

import functools
import inspect
from typing import Any

import numpy as np


def option_id(name: str, defaults: dict[str, Any], options: dict[str, Any]) -> str:
    """The id of format ``name`` with ``options`` (see :attr:`Format.id`)."""
    parts = []
    for pos, (k, d) in enumerate(defaults.items()):
        v = options.get(k, d)
        if v != d:
            parts.append(str(v) if pos == 0 else f"{k}={v}")
    return f"{name}[{','.join(parts)}]" if parts else name


def _option_type_error(name: str, value: Any, default: Any) -> str | None:
    """Why ``value`` cannot stand for an option whose default is ``default`` (None if it can).

    ``True`` is an int to Python, never to an option: ``row_group_size=true``
    on a command line must not mean 1.
    """
    if default is None or value is None and default is None:
        return None
    kind = type(default)
    if kind is bool:
        ok = isinstance(value, (bool, np.bool_))
    elif kind is int:
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    elif kind is float:
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    elif kind is str:
        ok = isinstance(value, str)
    else:
        return None
    if ok:
        return None
    return f"{name}: must be {kind.__name__} like its default {default!r}, got {type(value).__name__} {value!r}"


def _checking_option_types(init):
    """Wrap a format's ``__init__`` so an option of the wrong type is a ValueError naming it."""
    sig = inspect.signature(init)

    @functools.wraps(init)
    def checked(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        for name, value in list(bound.arguments.items())[1:]:
            param = sig.parameters[name]
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.default is param.empty:
                continue
            why = _option_type_error(name, value, param.default)
            if why:
                raise ValueError(f"{type(self).__name__}: {why}")
        init(self, *args, **kwargs)

    checked._checks_option_types = True
    return checked
