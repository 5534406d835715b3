"""The gRPC layer: decode, authenticate, call a use case, encode. Nothing else."""
