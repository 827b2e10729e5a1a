"""Client libraries: `AnnotationClient` for annotation tools, `CoordinatorClient` for servers, workers and operators."""

from aal_rpc.client.annotation import AnnotationClient, LeasedQuery, SubmitResult
from aal_rpc.client.coordinator import CoordinatorClient

__all__ = ["AnnotationClient", "CoordinatorClient", "LeasedQuery", "SubmitResult"]
