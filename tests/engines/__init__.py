"""Real agent CLIs against a scripted model endpoint (see docs/ENGINES.md)."""
