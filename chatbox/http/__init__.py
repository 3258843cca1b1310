"""``chatbox serve``: the HTTP side — API under ``/v1``, the seed's routes, MCP over HTTP, console."""
