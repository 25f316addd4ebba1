"""Argument checks shared by every config and entry point: one clear ``ValueError`` per bad value.

Each check names the field, shows the value it got and says what is valid, and
returns the value (normalised where that is harmless: a tuple from a list). They run
before any compute, so a wrong input never costs a training run.
"""

import math
import numbers


def integer(name, value, low=None, high=None, optional=False):
    """An ``int`` (not a bool, not a float) in ``[low, high]``; None allowed when `optional`."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer{_range(low, high)}{' or None' if optional else ''}, "
                         f"got {value!r} ({type(value).__name__})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer{_range(low, high)}, got {value}")
    return value


def number(name, value, low=None, high=None, low_open=False, high_open=False, optional=False):
    """A finite real number (int or float, not a bool) within the given bounds; None allowed when `optional`."""
    if value is None and optional:
        return None
    bounds = _range(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number{bounds}{' or None' if optional else ''}, "
                         f"got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number{bounds}, got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"{name} must be a finite number{bounds}, got {value}")
    return value


def flag(name, value):
    """A ``bool``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def choice(name, value, valid):
    """One of `valid` (compared with ==)."""
    if isinstance(value, bool) or value not in tuple(valid):
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(map(str, valid))}")
    return value


def names(name, value, valid=None, allow_empty=False, optional=False):
    """A list or tuple of strings (a lone string is refused, not split into characters); returns a tuple.

    Args:
        valid: if given, every entry must be one of these.
    """
    if value is None and optional:
        return None
    example = ", ".join(repr(v) for v in (list(valid)[:2] if valid else ["relu1", "relu2"]))
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list of names such as [{example}], got {value!r}")
    for entry in value:
        if not isinstance(entry, str):
            raise ValueError(f"{name} must be a list of names such as [{example}], got the entry {entry!r}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must name at least one entry{f'; valid: {_listing(valid)}' if valid else ''}")
    if valid is not None:
        unknown = [v for v in value if v not in valid]
        if unknown:
            raise ValueError(f"unknown {name} {', '.join(map(repr, unknown))}; valid: {_listing(valid)}")
    return tuple(value)


def numbers_list(name, value, low=None, high=None, low_open=False, high_open=False, integers=False,
                 allow_empty=False):
    """A list or tuple of finite numbers (integers when `integers`) within bounds; returns a tuple."""
    kind = "integers" if integers else "numbers"
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list of {kind}{_range(low, high, low_open, high_open)}, "
                         f"such as [0, 1], got {value!r}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must hold at least one value, got an empty list")
    check = integer if integers else number
    extra = {} if integers else {"low_open": low_open, "high_open": high_open}
    return tuple(check(f"{name}[{i}]", v, low, high, **extra) for i, v in enumerate(value))


def _range(low, high, low_open=False, high_open=False):
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low}"
    if low is None:
        return f" {'<' if high_open else '<='} {high}"
    return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def _listing(valid):
    return ", ".join(map(str, valid))
