"""The one exception type for failures a user can cause and fix (bad path, bad image, bad option).

Entry points print its message as one sentence and exit non-zero, without a traceback.
"""


class UserError(Exception):
    """A problem with the user's input, stated as one sentence that names the thing and the fix."""
