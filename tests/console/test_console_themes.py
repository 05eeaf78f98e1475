"""Theme files: shipped ones load, a user folder from deck.toml is added, a broken file is
reported once and skipped, --theme picks one (unknown -> exit 2), the choice saves to deck.toml."""

from __future__ import annotations

import re

import pytest

from console.app import ModeldeckApp, themes_for
from console.sources import FixedSource
from console.themes import BUILTIN_THEME_DIR, load_themes, save_theme_choice, theme_from_file
from console import replay
from engine.config import load_config
from engine.deck import Deck
from engine.errors import BadInput
from tests.console.console_helpers import wait_until_loaded

GOOD_THEME = 'name = "solar"\ndark = false\nprimary = "#268bd2"\nbackground = "#fdf6e3"\n' \
             '[variables]\ndeck-good = "#859900"\n'


def user_deck(deck_home, theme_dir, extra: str = "") -> Deck:
    deck_home.mkdir(parents=True, exist_ok=True)
    (deck_home / "deck.toml").write_text(f'[console]\ntheme_dir = "{theme_dir}"\n{extra}')
    return Deck.at(deck_home)


def test_shipped_themes_parse_and_define_the_console_variables():
    loaded = load_themes([BUILTIN_THEME_DIR])
    assert loaded.problems == ()
    for theme in loaded.themes:
        assert {"deck-good", "deck-warn", "deck-bad", "deck-muted"} <= set(theme.variables)


def test_user_theme_dir_is_loaded_and_broken_files_are_skipped_with_a_reason(deck_home, tmp_path):
    theme_dir = tmp_path / "themes"
    theme_dir.mkdir()
    (theme_dir / "solar.toml").write_text(GOOD_THEME)
    (theme_dir / "broken.toml").write_text('name = "broken"\nprimary = "#12"\n')
    (theme_dir / "torn.toml").write_text('name = "torn\n')
    (theme_dir / "typo.toml").write_text('name = "typo"\nprimary = "#123456"\nbackgrond = "#000"\n')
    loaded = themes_for(user_deck(deck_home, theme_dir))
    assert "solar" in loaded.names and "modeldeck-dark" in loaded.names
    assert not {"broken", "torn", "typo"} & set(loaded.names)
    problems = "\n".join(loaded.problems)
    assert "broken.toml skipped: 'primary': '#12' is not a colour" in problems
    assert "torn.toml skipped: not valid TOML" in problems
    assert "typo.toml skipped: unknown key 'backgrond'" in problems


async def test_broken_theme_is_reported_once_in_events(deck_home, tmp_path):
    theme_dir = tmp_path / "themes"
    theme_dir.mkdir()
    (theme_dir / "broken.toml").write_text('name = "broken"\n')
    app = ModeldeckApp(user_deck(deck_home, theme_dir), FixedSource(replay.snapshot()),
                       refresh_s=0.25)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until_loaded(pilot, app)
        await pilot.pause(1.0)  # several refreshes later it is still there once
        texts = [event.text for event in app.dashboard.query_one("#events").session_events]
        assert sum("broken.toml skipped" in text for text in texts) == 1


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


pytestmark = pytest.mark.anyio


def test_theme_option_and_deck_toml_choose_the_theme(deck_home, tmp_path):
    theme_dir = tmp_path / "themes"
    theme_dir.mkdir()
    (theme_dir / "solar.toml").write_text(GOOD_THEME)
    deck = user_deck(deck_home, theme_dir, 'theme = "solar"\n')
    assert ModeldeckApp(deck, FixedSource(replay.snapshot())).theme == "solar"
    chosen = ModeldeckApp(deck, FixedSource(replay.snapshot()), theme_name="modeldeck-light")
    assert chosen.theme == "modeldeck-light"
    with pytest.raises(BadInput, match="unknown theme 'nope'"):
        ModeldeckApp(deck, FixedSource(replay.snapshot()), theme_name="nope")


def test_unknown_theme_on_the_command_line_exits_2(cli):
    result = cli("tui", "--theme", "nope")
    assert result.code == 2
    assert "unknown theme 'nope'" in result.stderr


def test_saving_the_theme_keeps_the_rest_of_deck_toml(tmp_path):
    config = tmp_path / "deck.toml"
    config.write_text('# my deck\n[serve]\nport = 9000\n\n[console]\nrefresh_s = 2.0\ntheme = "x"\n'
                      '\n[finetune]\nsteps = 5\n')
    save_theme_choice(config, "modeldeck-light")
    loaded = load_config(config)
    assert loaded.console.theme == "modeldeck-light"
    assert loaded.console.refresh_s == 2.0 and loaded.serve.port == 9000 and loaded.finetune.steps == 5
    assert config.read_text().startswith("# my deck\n")
    fresh = tmp_path / "new" / "deck.toml"
    save_theme_choice(fresh, "modeldeck-high-contrast")
    assert load_config(fresh).console.theme == "modeldeck-high-contrast"


def test_a_theme_needs_a_name_and_a_primary_colour(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('primary = "#ffffff"\n')
    with pytest.raises(ValueError, match="'name'"):
        theme_from_file(path)
    path.write_text('name = "ok"\n')
    with pytest.raises(ValueError, match="'primary'"):
        theme_from_file(path)


def test_saving_the_theme_keeps_comments_when_the_console_header_carries_one(tmp_path):
    """A regular expression once missed `[console]  # ...` and wrote a second [console] table,
    after which every command exited 2."""
    config = tmp_path / "deck.toml"
    original = ('# my deck\n[console]  # the screen\nrefresh_s = 2.0  # calm\n# theme = "old"\n\n'
                '[serve]\nport = 9000\n')
    config.write_text(original)
    save_theme_choice(config, "modeldeck-light")
    text = config.read_text()
    loaded = load_config(config)
    assert loaded.console.theme == "modeldeck-light" and loaded.console.refresh_s == 2.0
    assert text.count("[console]") == 1
    for comment in ("# my deck", "# the screen", "# calm", '# theme = "old"'):
        assert comment in text
    save_theme_choice(config, "modeldeck-dark")  # again: replaced, not added
    assert [line for line in config.read_text().splitlines() if line.startswith("theme")] == \
        ['theme = "modeldeck-dark"']
    assert load_config(config).console.theme == "modeldeck-dark"


def test_saving_into_a_broken_deck_toml_leaves_it_untouched(tmp_path):
    config = tmp_path / "deck.toml"
    config.write_text("[console\nbroken")
    with pytest.raises(ValueError, match="not valid TOML"):
        save_theme_choice(config, "modeldeck-light")
    assert config.read_text() == "[console\nbroken"


def test_every_theme_a_sample_config_names_is_shipped():
    """sample_configs/deck-local.toml once offered `modeldeck-contrast`, which does not exist."""
    shipped = set(load_themes([BUILTIN_THEME_DIR]).names)
    samples = sorted((BUILTIN_THEME_DIR.parent / "sample_configs").glob("deck-*.toml"))
    named = {name for path in samples
             for name in re.findall(r"modeldeck-[a-z-]+", path.read_text())}
    assert named and named <= shipped, f"sample configs name themes that do not exist: {named - shipped}"
