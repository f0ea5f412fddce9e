"""Settings: defaults with no file, TOML, env overrides, errors naming file, key and reason."""

import subprocess
import sys
from pathlib import Path

import pytest

from pi_render.config import load_settings
from pi_render.errors import ConfigError


def test_defaults_follow_xdg(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    settings = load_settings(env=env)
    assert settings.data_dir == tmp_path / "state" / "pi-render"
    assert settings.socket == tmp_path / "run" / "pi-render" / "api.sock"
    assert settings.workers == {"default": 2, "render": 1}


def test_defaults_without_xdg_use_home(tmp_path: Path) -> None:
    settings = load_settings(env={"HOME": str(tmp_path)})
    assert settings.data_dir == tmp_path / ".local" / "state" / "pi-render"
    assert settings.socket == settings.data_dir / "api.sock"


def test_file_then_env_overrides(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "a"}"\nsocket = "{tmp_path / "a.sock"}"\n'
        "shutdown_grace_s = 7\n[workers]\ndefault = 3\n"
    )
    settings = load_settings(config, env={"PI_RENDER_DATA_DIR": str(tmp_path / "b")})
    assert settings.data_dir == tmp_path / "b"
    assert settings.socket == tmp_path / "a.sock"
    assert settings.workers == {"default": 3}
    assert settings.shutdown_grace_s == 7
    env = {"PI_RENDER_CONFIG": str(config), "PI_RENDER_SOCKET": str(tmp_path / "c.sock")}
    assert load_settings(env=env).socket == tmp_path / "c.sock"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("shutdown_grace_s = 'soon'\n", ["key 'shutdown_grace_s'", "valid number"]),
        ("[workers]\ndefault = 1000\n", ["key 'workers'", "between 0 and 64"]),
        ("colour = 'blue'\n", ["key 'colour'", "Extra inputs are not permitted"]),
        ("log_level = 'LOUD'\n", ["key 'log_level'"]),
        ("a = 1\nworkers = [1,,]\n", ["not valid TOML", "line 2"]),
        (f"socket = '/tmp/{'x' * 120}'\n", ["key 'socket'", "longer than 107 bytes"]),
    ],
)
def test_bad_config_names_file_key_and_reason(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(config, env={"HOME": str(tmp_path)})
    message = str(info.value)
    assert str(config) in message
    for needle in needles:
        assert needle in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", env={})


def test_serve_with_a_bad_config_exits_2_with_the_reason(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[workers]\ndefault = -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "pi_render", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert str(config) in result.stderr and "key 'workers'" in result.stderr
