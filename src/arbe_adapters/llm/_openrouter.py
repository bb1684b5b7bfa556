"""The OpenRouter and OpenAI-compatible chat models.

Both use the chat-completions client in `_client`. `OpenRouterChatModel`
talks to OpenRouter with the house key `OPENROUTER_API_KEY`;
`OpenAICompatibleChatModel` talks to any server with the OpenAI
chat-completions API (vLLM, llama.cpp server, Ollama) at `OPENAI_BASE_URL`.
"""

from __future__ import annotations

import logging
from typing import final

from arbe_adapters.llm._client import ChatCompletionsModel
from arbe_core.chat import ProviderContext
from arbe_core.errors import CredentialMissing, Unavailable

__all__ = ["DEFAULT_BASE_URL", "OpenAICompatibleChatModel", "OpenRouterChatModel"]

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"

#: The app URL sent in OpenRouter's `HTTP-Referer` attribution header.
#: NOTE: this is the PyPI page of the `arbe` distribution; switch it to the
#: project's home page once there is one.
APP_URL = "https://pypi.org/project/arbe/"


@final
class OpenRouterChatModel(ChatCompletionsModel):
    """A chat model on OpenRouter, with the house key `OPENROUTER_API_KEY`.

    The base URL is the `OPENROUTER_BASE_URL` setting, else OpenRouter's.
    Each call logs one INFO line on `arbe.llm.openrouter` (model, status,
    tokens) and one WARNING per retry. Neither contains message text or the key.
    The keyword arguments are those of `ChatCompletionsModel`.

    Raises:
        CredentialMissing: the context carries no key.
        InvalidInput: `OPENROUTER_BASE_URL` is not an http or https URL.
    """

    provider = "openrouter"
    key_name = "OPENROUTER_API_KEY"
    base_url_name = "OPENROUTER_BASE_URL"
    example_base_url = DEFAULT_BASE_URL
    logger = logging.getLogger("arbe.llm.openrouter")

    @property
    def service(self) -> str:
        """The server, as error messages name it at the start of a sentence."""
        return "OpenRouter"

    def _connect(self, context: ProviderContext) -> tuple[str, str | None]:
        if not context.credential:
            raise CredentialMissing(self.key_name, f"Model openrouter/{context.model}")
        base_url = context.config(self.base_url_name) or DEFAULT_BASE_URL
        return base_url, context.credential

    def _headers(self) -> dict[str, str]:
        headers = super()._headers()
        headers["HTTP-Referer"] = APP_URL
        headers["X-OpenRouter-Title"] = "arbe"
        return headers


@final
class OpenAICompatibleChatModel(ChatCompletionsModel):
    """A chat model on a server with the OpenAI chat-completions API.

    vLLM, llama.cpp server and Ollama serve this API. The base URL is the
    required `OPENAI_BASE_URL` setting. The key `OPENAI_API_KEY` is optional
    and sent only when set. Logs go to `arbe.llm.openai`. The keyword
    arguments are those of `ChatCompletionsModel`.

    Raises:
        Unavailable: `OPENAI_BASE_URL` is not set.
        InvalidInput: `OPENAI_BASE_URL` is not an http or https URL.
    """

    provider = "openai"
    key_name = "OPENAI_API_KEY"
    base_url_name = "OPENAI_BASE_URL"
    example_base_url = "http://127.0.0.1:8000/v1"
    logger = logging.getLogger("arbe.llm.openai")

    @property
    def service(self) -> str:
        """The server, as error messages name it at the start of a sentence."""
        return f"The OpenAI-compatible server at {self.shown_base_url}"

    def _connect(self, context: ProviderContext) -> tuple[str, str | None]:
        base_url = context.config(self.base_url_name)
        if not base_url:
            msg = (
                f"Model openai/{context.model} needs {self.base_url_name}, the base "
                f"URL of an OpenAI-compatible server such as http://127.0.0.1:8000/v1 "
                f"(vLLM) or http://127.0.0.1:11434/v1 (Ollama), and it is not set. "
                f"Set it with `export {self.base_url_name}=URL` or "
                f"`arbe secret set {self.base_url_name}`."
            )
            raise Unavailable(msg)
        key = context.credential or context.config(self.key_name)
        return base_url, key or None

    def _extra_body(self) -> dict[str, object]:
        # The OpenAI API puts token usage in a stream only when the request
        # sets `stream_options.include_usage`.
        return {"stream_options": {"include_usage": True}}
