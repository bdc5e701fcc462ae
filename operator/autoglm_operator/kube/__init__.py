"""The only I/O layer: server-side apply, reads, status patches and Events against the API server."""
