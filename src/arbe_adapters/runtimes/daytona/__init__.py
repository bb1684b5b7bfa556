"""The `daytona` runtime plugin."""
