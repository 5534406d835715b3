"""Room fan-out: committed events read once per room and shared by its subscribers."""
