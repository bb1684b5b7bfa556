"""The `local` runtime plugin: sandboxes are directories under the arbe home."""
