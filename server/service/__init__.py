"""Use cases: authorise, validate and carry out each operation over the store (no gRPC)."""
