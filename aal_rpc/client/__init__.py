"""Client libraries: `AnnotationClient` for annotation tools, `CoordinatorClient` for servers, workers and operators."""

from aal_rpc.client.annotation import LEASE_GONE, AnnotationClient, LeasedQuery, SubmitResult, lease_gone
from aal_rpc.client.coordinator import CoordinatorClient

__all__ = ["LEASE_GONE", "AnnotationClient", "CoordinatorClient", "LeasedQuery", "SubmitResult", "lease_gone"]
