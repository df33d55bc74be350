"""Library error types.

All derive from ``LibraryError`` (a ``ValueError`` and the lab's ``LabError``) so callers
can show one clear message for any library problem, or catch a specific case.
"""

from __future__ import annotations

from app.errors import LabError


class LibraryError(LabError, ValueError):
    """A concept-library operation failed; the message says what to do about it."""


class InvalidSlug(LibraryError):
    """A slug (concept id / file name) breaks the naming rules."""


class ConceptNotFound(LibraryError):
    """No user or shipped concept has this slug."""


class ConceptExists(LibraryError):
    """Saving would overwrite an existing concept without ``overwrite=True``."""


class ConceptValidationError(LibraryError):
    """A concept file or bundle does not match the schema.

    ``problems`` lists one human-readable line per problem (file, line, field, reason).
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems) if problems else [message]


class VectorMismatch(LibraryError):
    """Stored vectors were made for a different model (fingerprint or shape differs)."""


class StaleVectors(LibraryError):
    """Stored vectors were extracted from an older version of the concept's pairs."""
