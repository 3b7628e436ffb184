"""The server process: the supervisor, its workers, and one association from its first byte to its end."""
