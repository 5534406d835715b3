"""Business rules of coupon pools, grants and redemptions: no gRPC, no SQL."""
