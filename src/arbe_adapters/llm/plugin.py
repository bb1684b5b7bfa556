"""Registers the built-in model providers; httpx loads only when one is built."""

from __future__ import annotations

from arbe_adapters.plugins.hookspecs import Register, hookimpl
from arbe_core.chat import ProviderContext
from arbe_core.ports import ChatModel


def build_openrouter(context: ProviderContext) -> ChatModel:
    """Build an OpenRouter chat model."""
    from arbe_adapters.llm._openrouter import OpenRouterChatModel

    return OpenRouterChatModel(context)


def build_openai(context: ProviderContext) -> ChatModel:
    """Build a chat model on an OpenAI-compatible server at `OPENAI_BASE_URL`."""
    from arbe_adapters.llm._openrouter import OpenAICompatibleChatModel

    return OpenAICompatibleChatModel(context)


def build_shell(context: ProviderContext) -> ChatModel:
    """Build the deterministic `builtin/shell` bot."""
    from arbe_adapters.llm._shell import ShellChatModel

    return ShellChatModel(context)


@hookimpl
def register_providers(register: Register) -> None:
    """Register `openrouter`, `openai` and `builtin`."""
    register(
        "openrouter",
        build_openrouter,
        credential="OPENROUTER_API_KEY",
        description="OpenRouter chat completions with tool calls",
    )
    # The key of an OpenAI-compatible server is optional (a local vLLM or
    # Ollama needs none), so it is looked up as a setting, not required as a
    # credential.
    register(
        "openai",
        build_openai,
        credential=None,
        description=(
            "OpenAI-compatible chat completions at OPENAI_BASE_URL "
            "(vLLM, llama.cpp server, Ollama); OPENAI_API_KEY is optional"
        ),
    )
    register(
        "builtin",
        build_shell,
        credential=None,
        description="builtin/shell: runs the entry's text as one command, no model",
    )
