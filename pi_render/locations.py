"""Where the data dir and the socket are when nothing says otherwise (light: the quick CLI
path imports it)."""

from collections.abc import Mapping
from pathlib import Path


def default_data_dir(env: Mapping[str, str]) -> Path:
    """`$XDG_STATE_HOME/pi-render`, else `~/.local/state/pi-render`."""
    state = env.get("XDG_STATE_HOME")
    base = Path(state) if state else Path(env.get("HOME", str(Path.home()))) / ".local" / "state"
    return base / "pi-render"


def default_socket(env: Mapping[str, str], data_dir: Path) -> Path:
    """`$XDG_RUNTIME_DIR/pi-render/api.sock`, else `<data dir>/api.sock`."""
    runtime = env.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "pi-render" / "api.sock" if runtime else data_dir / "api.sock"


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """What may be recomputed (GPU discovery): systemd's `$CACHE_DIRECTORY`, else
    `$XDG_CACHE_HOME/pi-render`, else `~/.cache/pi-render`."""
    if env.get("CACHE_DIRECTORY"):
        return Path(env["CACHE_DIRECTORY"].split(":")[0])
    cache = env.get("XDG_CACHE_HOME")
    base = Path(cache) if cache else Path(env.get("HOME", str(Path.home()))) / ".cache"
    return base / "pi-render"
