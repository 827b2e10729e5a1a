"""Domain errors. Servicers turn each into its gRPC status; the core never imports grpc."""

MAX_MESSAGE_BYTES = 1000  # UTF-8 bytes of an error's message sent to a client: messages quote what it sent


class AalError(Exception):
    """Base class of errors a caller can act on."""


class InvalidArgument(AalError):
    """The request is malformed or out of range."""


class NotFound(AalError):
    """The named query, item or model does not exist."""


class FailedPrecondition(AalError):
    """The request is well-formed but the state forbids it (e.g. an expired or foreign lease)."""


class ResourceExhausted(AalError):
    """A size or capacity bound was exceeded."""


class Unavailable(AalError):
    """A dependency (the shared database) cannot be reached right now; the caller should retry."""


class PermissionDenied(AalError):
    """The caller is known but may not do this (e.g. correct another annotator's label)."""


def message_of(exc: Exception) -> str:
    """`exc`'s message as a client is told it: at most MAX_MESSAGE_BYTES of UTF-8. Messages quote ids and names from
    the request, which may be megabytes long: echoed whole, a status detail outgrew gRPC's metadata limit (the
    client saw RESOURCE_EXHAUSTED instead of the status; gRPC sends each byte outside ASCII as three), and a
    session's queue of answers held megabytes each."""
    text = str(exc)
    data = text.encode("utf-8", errors="replace")
    if len(data) <= MAX_MESSAGE_BYTES:
        return text
    return f"{data[:MAX_MESSAGE_BYTES].decode('utf-8', errors='ignore')}… ({len(text)} characters in all)"
