"""Domain errors: what went wrong, in terms the API layer maps to gRPC statuses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field: its path in the request and what is wrong."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class PreconditionViolation:
    """One unmet precondition: a machine-readable type, its subject and an explanation."""

    type: str
    subject: str
    description: str


class DomainError(Exception):
    """Root of every error the domain raises on purpose."""

    reason: str = ""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason


class Unauthenticated(DomainError):
    """The caller's credentials are missing, malformed, expired or badly signed."""


class PermissionDenied(DomainError):
    """The caller may not do this (wrong role, or not the owner of the room)."""


class InvalidArgument(DomainError):
    """The request is malformed; each violation names the offending field."""

    def __init__(
        self, violations: list[FieldViolation], *, reason: str = "INVALID_ARGUMENT"
    ) -> None:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(f"invalid request: {summary}", reason=reason)
        self.violations = violations


class RequestIdReused(InvalidArgument):
    """A request_id was reused for a different request."""

    def __init__(self, field_name: str = "request_id") -> None:
        super().__init__(
            [FieldViolation(field_name, "was already used for a different request")],
            reason="REQUEST_ID_REUSED",
        )


class NotFound(DomainError):
    """The named resource does not exist."""

    def __init__(self, resource_type: str, name: str) -> None:
        super().__init__(f"{resource_type} {name!r} not found", reason="NOT_FOUND")
        self.resource_type = resource_type
        self.name = name


class AlreadyExists(DomainError):
    """The resource exists already (created by another request)."""

    def __init__(self, resource_type: str, name: str, message: str = "") -> None:
        super().__init__(
            message or f"{resource_type} {name!r} already exists", reason="ALREADY_EXISTS"
        )
        self.resource_type = resource_type
        self.name = name


class FailedPrecondition(DomainError):
    """The request is well formed but the system is not in a state that allows it."""

    def __init__(self, violations: list[PreconditionViolation]) -> None:
        summary = "; ".join(v.description for v in violations)
        super().__init__(summary, reason=violations[0].type if violations else "")
        self.violations = violations


class VersionConflict(DomainError):
    """Optimistic concurrency: the caller's expected version is not the current one."""

    def __init__(self, pool_id: str, expected: int, current: int) -> None:
        super().__init__(
            f"pool {pool_id!r} is at version {current}, not {expected}: re-read and retry",
            reason="VERSION_CONFLICT",
        )
        self.pool_id = pool_id
        self.expected = expected
        self.current = current


def require(violations: list[FieldViolation]) -> None:
    """Raise InvalidArgument if any violation was collected."""
    if violations:
        raise InvalidArgument(violations)


class Unavailable(DomainError):
    """The service cannot serve this now (shutting down); the caller should retry."""


class Conflict(DomainError):
    """A concurrent change won a race the database arbitrated; retrying is safe."""


class Overloaded(DomainError):
    """Too much in flight: refused at once; retrying after a short delay is expected."""
