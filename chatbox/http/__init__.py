"""``chatbox serve``: the HTTP side — API under ``/v1``, the seed's routes, MCP over HTTP, console.

Its own process and a bus client like ``chatbox mcp`` (``main.py``), acting with each caller's
own token (``bridge.py``). docs/HTTP.md documents it whole. Where it goes beyond the contract
the console was built against, it adds and never changes:

- ``/`` and ``/console/<file>`` need no token (they are code, not data: the login page must
  load before a login); every other route but ``/healthz`` needs one.
- A message also carries ``type``, ``resolution`` and ``mentions``; an agent ``paused_reason``,
  ``current_turn`` and ``revoked``; a channel ``view``, ``wake``, ``created_by`` and
  ``last_activity``.
- An escalation's ``post`` is the seq to approve or deny (the escalation itself, or the pending
  tier-2 post), ``about`` the message an escalation names.
- ``event: agent`` carries as its ``id`` the highest message seq the stream has sent, so a
  resume after it replays exactly the messages not yet seen.
- ``DELETE /v1/session`` answers ``{"status": "ok"}``; ``GET /v1/inbox`` ``{"messages",
  "more"}``; ``POST /v1/ack`` ``{"channel", "last_read"}``; ``GET /v1/wait`` ``{"messages",
  "more", "timed_out"}``; pause and resume ``{"agent"}``.
- A refused ``Host`` is ``421``; a refused ``Origin`` ``403`` with code ``origin``.
"""
