"""Errors caused by the user's input (config, data, paths), reported as one paragraph.

``train.py`` and the other entry points catch :class:`UserError` and print its message
without a traceback (set ``HYDRA_FULL_ERROR=1`` to see one); anything else is a bug and
keeps its traceback.
"""


class UserError(Exception):
    """Something the user can fix: the message says what is wrong and how to fix it."""


class ConfigError(UserError):
    """A config value is out of range, of the wrong type, or inconsistent with another."""


class DataError(UserError):
    """The data set is missing, corrupt, or its root is not a usable folder."""


class DivergenceError(UserError):
    """Training produced a non-finite loss or weight; the message names the step and network."""
