"""The settings of an arbe process: its files, read from options and the environment."""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from pathlib import Path
from typing import final

import attrs

__all__ = ["Settings"]

DATABASE_FILE = "arbe.db"
KEY_FILE = "master.key"
#: A new master key written by `house rotate-key` before it replaces the old one.
KEY_FILE_PENDING = "master.key.new"


def _default_home() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("arbe", appauthor=False))


@final
@attrs.frozen
class Settings:
    """The settings of one arbe process.

    The composition root is the only place that reads the environment; the
    library and adapters receive these values.
    """

    home: Path
    house: str | None = None
    database_url: str | None = None
    master_key: str | None = attrs.field(default=None, repr=False)
    plugins: str | None = None
    actor: str = "user:local"
    #: Connections a PostgreSQL storage opens at most; None keeps its default.
    pool_size: int | None = None

    @classmethod
    def from_env(
        cls,
        home: str | Path | None = None,
        house: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build settings from explicit values, then `ARBE_*` variables."""
        env = os.environ if environ is None else environ
        home_text = home or env.get("ARBE_HOME")
        return cls(
            home=Path(home_text).expanduser() if home_text else _default_home(),
            house=house or env.get("ARBE_HOUSE") or None,
            database_url=env.get("ARBE_DATABASE_URL") or None,
            master_key=env.get("ARBE_MASTER_KEY") or None,
            plugins=env.get("ARBE_PLUGINS"),
            actor=f"user:{_login()}",
        )

    @property
    def database_path(self) -> Path:
        """The SQLite database file under the home."""
        return self.home / DATABASE_FILE

    @property
    def key_path(self) -> Path:
        """The master key file beside the database."""
        return self.home / KEY_FILE

    def ensure_home(self) -> None:
        """Create the home with mode 0700 when it does not exist yet."""
        if not self.home.exists():
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.home, 0o700)


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"
