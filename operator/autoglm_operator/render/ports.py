"""The ports Triton serves on in every pod the operator renders (and its Services expose)."""

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
