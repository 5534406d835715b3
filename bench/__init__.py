"""`make bench`: the real server under load from separate processes, with a correctness gate."""
