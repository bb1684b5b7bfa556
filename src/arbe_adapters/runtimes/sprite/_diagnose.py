"""The checks behind `SpriteRuntime.diagnose`, each failure with its fix."""

from __future__ import annotations

from collections.abc import Callable

from arbe_core.errors import (
    ArbeError,
    CredentialRejected,
    RateLimited,
    SandboxUnreachable,
)
from arbe_core.runtime import Check, SandboxInfo, SandboxState

__all__ = ["diagnose"]

_FIX_MISSING = "Set it with `arbe secret set SPRITES_TOKEN`."


def diagnose(
    list_sprites: Callable[[], list[SandboxInfo]],
    token_set: bool,
    api_url: str,
    prefix: str,
) -> list[Check]:
    """Check the token, the API and the status of each house sprite.

    Args:
        list_sprites: lists the house's sprites. The error it raises
            decides which check failed.
        token_set: whether the house has SPRITES_TOKEN.
        api_url: the Sprites API base URL in use.
        prefix: the name prefix of the house's sprites.

    Returns:
        The checks in order. They stop at the first failure, because the
        later ones depend on it.
    """
    if not token_set:
        detail = "SPRITES_TOKEN is not set for this house."
        return [Check("token present", False, detail, fix=_FIX_MISSING)]
    checks = [Check("token present", True, "SPRITES_TOKEN is set.")]

    try:
        sprites = list_sprites()
    except SandboxUnreachable as exc:
        fix = f"Check the network and SPRITES_API_URL (now {api_url})."
        checks.append(Check("API reachable", False, exc.message, fix=fix))
        return checks
    except ArbeError as exc:
        checks.append(Check("API reachable", True, f"{api_url} responded."))
        checks.append(_response_check(exc))
        return checks

    checks.append(Check("API reachable", True, f"{api_url} responded."))
    checks.append(Check("token accepted", True, "Sprites accepted SPRITES_TOKEN."))
    count = f"{len(sprites)} sprite(s) of this house, named {prefix}*."
    checks.append(Check("house sprites", True, count))
    checks.extend(_sprite_check(info) for info in sprites)
    return checks


def _response_check(exc: ArbeError) -> Check:
    """Turn an error from a reachable API into a failed check."""
    if isinstance(exc, CredentialRejected):
        fix = "Set a valid token with `arbe secret set SPRITES_TOKEN`."
        return Check("token accepted", False, exc.message, fix=fix)
    if isinstance(exc, RateLimited):
        wait = f"Wait {exc.retry_after:g} s" if exc.retry_after else "Wait a minute"
        fix = f"{wait} and run `arbe sandbox diagnose` again."
        return Check("token accepted", False, f"Not checked: {exc.message}", fix=fix)
    fix = "Run `arbe sandbox diagnose` again later; check SPRITES_API_URL if it stays."
    return Check("API response", False, exc.message, fix=fix)


def _sprite_check(info: SandboxInfo) -> Check:
    name = f"sprite {info.name}"
    if info.state is SandboxState.SLEEPING:
        detail = f"{info.raw_state}: sleeping, wakes on the next command."
        return Check(name, True, detail)
    if info.state is SandboxState.STARTED:
        return Check(name, True, f"{info.raw_state}: awake.")
    detail = f"Unexpected status {info.raw_state!r}."
    fix = f"Check it with `arbe sandbox ping {info.name}`."
    return Check(name, False, detail, fix=fix, warning=True)
