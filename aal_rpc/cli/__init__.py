"""One click command module per executable: aal-coordinator, aal-server, aal-worker, aal-annotate, aal-admin,
aal-experiment."""
