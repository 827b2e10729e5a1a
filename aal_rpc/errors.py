"""Domain errors. Servicers turn each into its gRPC status; the core never imports grpc."""


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
