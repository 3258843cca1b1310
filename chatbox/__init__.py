"""ChatBox. The distribution's one import namespace; this package itself holds the clients (cli, mcp, demo)."""
