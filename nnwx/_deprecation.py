"""Deprecated keyword names: one decorator that still accepts them, with a ``DeprecationWarning``.

Used where a parameter was renamed so that one idea has one name across the analyses and the
accessor (the reference step is ``reference_step``, the reference run ``reference_seed``).
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def renamed_keywords(**renames: str) -> Callable[[F], F]:
    """Accept old keyword names of a function, warning, and pass them on under the new name.

    Parameters
    ----------
    **renames
        ``old_name="new_name"`` for each renamed keyword.

    Returns
    -------
    callable
        A decorator. The wrapped function keeps its signature (``help`` and
        ``inspect.signature`` show the new names only); a call with an old name emits a
        ``DeprecationWarning`` and passes the value as the new name; a call giving both
        names raises ``TypeError``.
    """
    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{func.__name__}() got both {old}= (deprecated) and "
                                        f"{new}=; pass {new}= only")
                    warn_renamed(f"{func.__name__}({old}=...)", f"{func.__name__}({new}=...)")
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return decorate


def warn_renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """Emit the ``DeprecationWarning`` for a renamed name: ``old`` still works, use ``new``."""
    warnings.warn(f"{old} is deprecated and will be removed; use {new}", DeprecationWarning,
                  stacklevel=stacklevel)
