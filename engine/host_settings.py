"""deck.toml `[[hosts]]`: the other boxes of a fleet, reached with the system `ssh` client.

  [[hosts]]
  name = "gpu-a"                # how modeldeck names the host (letters, digits, . _ -)
  ssh = "ops@gpu-a.lan"         # the ssh destination: user@host or a Host alias of ~/.ssh/config
  modeldeck = "modeldeck"       # the remote command line (words, split as a shell would)
  home = "/srv/modeldeck"       # the remote deck home (default: the remote's own default)
  target = "local"              # the host's target its gated deploy moves

Checked when deck.toml is read (exit 2), below engine.config in the layers: a destination that
starts with `-` would be read by ssh as an option (option injection), so it is refused.
"""

from __future__ import annotations

import shlex
from typing import Annotated

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo,
                      field_validator)

from engine.validate import NAME_PATTERN, unique_names


def _destination(value: str) -> None:
    if value.startswith("-"):
        raise ValueError("an ssh destination must not start with '-' (ssh would read it as an "
                         "option)")
    if any(character.isspace() for character in value):
        raise ValueError("an ssh destination has no spaces (user@host or a Host alias)")


def _command_line(value: str) -> None:
    try:
        words = shlex.split(value)
    except ValueError as error:
        raise ValueError(f"not a command line: {error}") from None
    if not words:
        raise ValueError("the remote command line is empty")


class HostSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    ssh: str = Field(min_length=1, max_length=255)
    modeldeck: str = "modeldeck"
    home: str | None = Field(default=None, min_length=1, max_length=1024)
    target: str = "local"
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)  # a poll that takes longer: down
    stale_after_s: float = Field(default=5.0, gt=0, le=3600)  # one answered later: stale

    @field_validator("name", "target")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):  # shown in history (host:NAME) and passed to ssh
            raise ValueError("use letters, digits, '.', '_' or '-' (max 64)")
        return value

    @field_validator("ssh", "modeldeck", "home")
    @classmethod
    def _text(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if any(ord(character) < 32 or ord(character) == 127 for character in value):
            raise ValueError(f"{info.field_name} must not contain control characters")
        if info.field_name == "ssh":
            _destination(value)
        elif info.field_name == "modeldeck":
            _command_line(value)
        return value

    @property
    def command_words(self) -> tuple[str, ...]:
        return tuple(shlex.split(self.modeldeck))


def _unique(hosts: tuple[HostSettings, ...]) -> tuple[HostSettings, ...]:
    return unique_names(hosts, "host name")


Hosts = Annotated[tuple[HostSettings, ...], AfterValidator(_unique)]
