"""The `sprite` runtime plugin."""
