"""Exceptions that reach the user as one line on stderr.

Every error the CLI can show derives from :class:`AnnexError`. Its ``str()`` is the
message the user sees: what is wrong and, where we know it, what to do.
"""


class AnnexError(Exception):
    """A failure explained to the user in one line."""


class NotARepositoryError(AnnexError):
    """The directory is not inside a git repository."""


class NotInitializedError(AnnexError):
    """The git repository has no annex.uuid yet."""


class InvalidKeyError(AnnexError, ValueError):
    """A string that is not a valid, safe git-annex key."""
