"""Model providers: OpenRouter, OpenAI-compatible endpoints and builtin/shell."""
