"""The one email rule, for the API and the command line alike."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email


def normalise_email(value: str) -> str:
    """Syntax (not deliverability), then lower case; ``ValueError`` saying what is wrong."""
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
