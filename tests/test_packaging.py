"""`pip install .` must carry what the console needs at run time: the shipped themes."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

from tests.conftest import REPO


def test_a_wheel_install_finds_the_shipped_themes(tmp_path: Path):
    # A fresh venv that borrows this one's dependencies (a .pth to its site-packages: the editable
    # install's own .pth is not processed from there) and gets modeldeck from a built wheel.
    wheel_dir, env_dir = tmp_path / "wheel", tmp_path / "venv"
    alone = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheel_dir), str(REPO)], check=True, capture_output=True, timeout=300)
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(wheel_dir.glob("modeldeck-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--ignore-installed", str(wheel)], check=True, env=alone,
                   capture_output=True, timeout=300)
    probe = ("import console.themes as t, sys; "
             "assert not t.__file__.startswith(sys.argv[1]), t.__file__; "
             "print(t.BUILTIN_THEME_DIR); print(' '.join(sorted(t.load_themes([t.BUILTIN_THEME_DIR]).names)))")
    shown = subprocess.run([python, "-c", probe, str(REPO)], cwd=tmp_path, check=True, env=alone,
                           capture_output=True, text=True, timeout=120).stdout.splitlines()
    assert Path(shown[0]).is_relative_to(env_dir)
    assert shown[1].split() == ["modeldeck-dark", "modeldeck-high-contrast", "modeldeck-light"]
