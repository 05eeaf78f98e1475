"""The footer and the header of the dashboard.

DeckFooter is Textual's Footer with the help and quit keys pinned to its right edge: the action
keys on the left may be cut on a narrow terminal, `? Help` and `q Quit` never are.

DeckHeader is one line: the host, the deck home, the local server's state and address, and
badges for what changes what the screen shows or does (read-only, paused, a filter).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import HorizontalGroup
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

PINNED_ACTIONS = ("help", "quit")
WIDE_FOOTER = 120  # from this width the command palette's key has room too


class DeckFooter(Footer):
    DEFAULT_CSS = """
    DeckFooter #pinned-keys {
        dock: right;
        width: auto;
        height: 1;
        background: $footer-background;
    }
    """

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        seen: set[str] = set()
        pinned: list[FooterKey] = []
        others: list[FooterKey] = []
        for _, binding, enabled, tooltip in self.screen.active_bindings.values():
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            key = FooterKey(binding.key, self.app.get_key_display(binding), binding.description,
                            binding.action, disabled=not enabled, tooltip=tooltip)
            (pinned if binding.action in PINNED_ACTIONS else others).append(key)
        palette = self.palette_key()
        # Keys that would be cut by the pinned ones are left out whole (help lists them all).
        room = self.app.size.width - sum(key_width(key) for key in (*pinned, palette)
                                         if key is not None)
        for key in others:
            room -= key_width(key)
            if room < 0:
                break
            yield key.data_bind(compact=Footer.compact)
        with HorizontalGroup(id="pinned-keys"):
            for key in pinned:
                yield key.data_bind(compact=Footer.compact)
            if palette is not None:
                yield palette.data_bind(compact=Footer.compact)

    def palette_key(self) -> FooterKey | None:
        """ctrl+p, where there is room for it (help lists it everywhere)."""
        if not (self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE
                and self.app.size.width >= WIDE_FOOTER):
            return None
        found = self.screen.active_bindings.get(self.app.COMMAND_PALETTE_BINDING)
        if found is None:
            return None
        _, binding, enabled, _ = found
        return FooterKey(binding.key, self.app.get_key_display(binding), binding.description,
                         binding.action, disabled=not enabled)


def key_width(key: FooterKey) -> int:
    """Cells a (non-compact) footer key takes: ` k Description `."""
    return len(key.key_display) + len(key.description) + 3


class DeckHeader(Widget):
    """One line; the badges keep their place on the right and the left part is cut first."""

    DEFAULT_CSS = """
    DeckHeader {
        dock: top;
        height: 1;
        background: $panel;
        color: $foreground;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.parts: tuple[str, ...] = ("modeldeck",)
        self.server: tuple[str, str, str] = ("", "", "")  # state word, url, colour
        self.badges: tuple[str, ...] = ()

    def show(self, parts: Sequence[str], server: tuple[str, str, str],
             badges: Sequence[str]) -> None:
        new = (tuple(parts), server, tuple(badges))
        if new != (self.parts, self.server, self.badges):
            self.parts, self.server, self.badges = new
            self.refresh()

    @property
    def text(self) -> str:
        """What the header says, as plain text (for tests)."""
        return self.render_line_text(max(self.size.width, 200))

    def render_line_text(self, width: int) -> str:
        return self.compose_text(width).plain

    def compose_text(self, width: int) -> Text:
        badges = Text()
        for badge in self.badges:
            badges.append(" ")
            badges.append(f" {badge} ", style="reverse bold")
        room = max(0, width - badges.cell_len - 1)
        left = self.left_text(self.parts)
        if left.cell_len > room and len(self.parts) > 2:
            # The deck home gives way first (its tail names it), then the host.
            *head, home = self.parts
            spare = room - self.left_text((*head, "")).cell_len
            shown = "…" + home[-(spare - 1):] if spare > 8 else ""
            left = self.left_text((*head, shown) if shown else tuple(head))
        if left.cell_len > room:
            left.truncate(room, overflow="ellipsis")
        line = left
        line.append(" " * max(0, width - left.cell_len - badges.cell_len - 1))
        line.append_text(badges)
        return line

    def left_text(self, parts: Sequence[str]) -> Text:
        left = Text(" ")
        left.append(parts[0], style="bold")
        for part in parts[1:]:
            left.append(" · ", style="dim")
            left.append(part)
        state, url, colour = self.server
        if state:
            left.append(" · ", style="dim")
            left.append("local ")
            left.append(state, style=colour or "")
            if url:
                left.append(f" {url}")
        return left

    def render(self) -> Text:
        return self.compose_text(self.size.width)
