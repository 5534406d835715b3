"""liveresource server: gRPC API over a domain layer over a transactional store."""
