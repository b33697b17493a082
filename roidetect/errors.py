"""The one exception type for mistakes a user can make and fix.

The command line turns a :class:`UserError` into a single line on stderr and exit status 2.
Raise it with a message that names the file or value and says what to do about it.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (file, value, option), not a bug in roidetect."""
