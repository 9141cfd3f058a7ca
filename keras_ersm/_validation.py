"""Argument checks shared by the whole package (internal).

One rule everywhere: an argument of the wrong type raises a `TypeError`,
an argument of the right type with a wrong value (out of range, not among
the choices, NaN or Inf) raises a `ValueError`. Both messages name the
argument and the received value:

    Invalid value for argument `name`. Expected <what>. Received: name=<value>

Numbers follow `numbers.Integral` / `numbers.Real`, so numpy scalars
(`np.int64(2)`, `np.float32(0.5)`) are accepted wherever Python numbers are;
`bool` is never a number here. Every number is checked to be finite.
"""

import math
import numbers

import numpy as np


def invalid(name, expected, value, hint="", error=ValueError):
    """Returns (does not raise) the package's error for a bad argument.

    Args:
        name: the argument's name.
        expected: what was expected, e.g. `"an integer >= 1"`.
        value: the received value (shown with `repr`).
        hint: optional sentence appended to the message. Defaults to `""`.
        error: the exception class, `ValueError` (a wrong value) or
            `TypeError` (a wrong type). Defaults to `ValueError`.

    Returns:
        The exception instance.
    """
    message = (
        f"Invalid value for argument `{name}`. Expected {expected}. "
        f"Received: {name}={value!r}"
    )
    return error(message + (f". {hint}" if hint else ""))


def invalid_type(name, expected, value, hint=""):
    """`invalid(...)` as a `TypeError` (the argument has the wrong type)."""
    return invalid(name, expected, value, hint, TypeError)


def is_int(value):
    """True for Python and numpy integers, False for bools."""
    return isinstance(value, numbers.Integral) and not isinstance(
        value, (bool, np.bool_)
    )


def is_number(value):
    """True for Python and numpy real numbers, False for bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _range_text(minimum, maximum):
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def check_int(name, value, minimum=None, maximum=None, expected=None):
    """Checks an integer argument (numpy integers accepted), returns an int.

    Args:
        name: the argument's name.
        value: the value to check.
        minimum: smallest allowed value, or `None`. Defaults to `None`.
        maximum: largest allowed value, or `None`. Defaults to `None`.
        expected: the message's "Expected ..." text. Defaults to `None`
            (built from the bounds).

    Returns:
        `int(value)`.

    Raises:
        TypeError: `value` is not an integer (bools and floats included).
        ValueError: `value` is out of range.
    """
    expected = expected or "an integer" + _range_text(minimum, maximum)
    if not is_int(value):
        raise invalid_type(name, expected, value)
    if (minimum is not None and value < minimum) or (
        maximum is not None and value > maximum
    ):
        raise invalid(name, expected, value)
    return int(value)


def check_number(
    name,
    value,
    positive=False,
    non_negative=False,
    minimum=None,
    maximum=None,
    maximum_open=False,
    expected=None,
):
    """Checks a finite real argument (numpy scalars accepted), returns a float.

    Args:
        name: the argument's name.
        value: the value to check.
        positive: require `value > 0`. Defaults to `False`.
        non_negative: require `value >= 0`. Defaults to `False`.
        minimum: smallest allowed value, or `None`. Defaults to `None`.
        maximum: largest allowed value, or `None`. Defaults to `None`.
        maximum_open: `maximum` itself is excluded. Defaults to `False`.
        expected: the message's "Expected ..." text. Defaults to `None`
            (built from the constraints).

    Returns:
        `float(value)`.

    Raises:
        TypeError: `value` is not a real number (bools included).
        ValueError: `value` is NaN, infinite or out of range.
    """
    if expected is None:
        if positive:
            expected = "a finite positive number"
        elif non_negative:
            expected = "a finite non-negative number"
        elif minimum is not None and maximum is not None:
            close = ")" if maximum_open else "]"
            expected = f"a number in [{minimum}, {maximum}{close}"
        else:
            expected = "a finite number" + _range_text(minimum, maximum)
    if not is_number(value):
        raise invalid_type(name, expected, value)
    number = float(value)
    if not math.isfinite(number):
        raise invalid(name, expected, value, "NaN and Inf are not accepted")
    if (
        (positive and number <= 0)
        or (non_negative and number < 0)
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
        or (maximum is not None and maximum_open and number >= maximum)
    ):
        raise invalid(name, expected, value)
    return number


def check_bool(name, value):
    """Checks a bool argument (numpy bools accepted), returns a bool.

    Raises:
        TypeError: `value` is not a bool (`0`, `1` and `"yes"` included).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise invalid_type(name, "a bool", value)
    return bool(value)


def check_str(name, value, expected="a non-empty string"):
    """Checks a non-empty string argument, returns it.

    Raises:
        TypeError: `value` is not a string.
        ValueError: `value` is empty.
    """
    if not isinstance(value, str):
        raise invalid_type(name, expected, value)
    if not value:
        raise invalid(name, expected, value)
    return value


def check_choice(name, value, choices):
    """Checks that `value` is one of `choices`, returns it.

    Raises:
        TypeError: `value` is not of the choices' type (e.g. a number where
            names are expected).
        ValueError: `value` is of the right type but not among `choices`.
    """
    expected = f"one of {tuple(choices)}"
    kinds = tuple({type(c) for c in choices})
    if not isinstance(value, kinds):
        raise invalid_type(name, expected, value)
    if value not in choices:
        raise invalid(name, expected, value)
    return value
