"""Per-host path mapping (`[farm.path_map]`): the farm records paths in one form (the farm's),
and a host that mounts the shared folder elsewhere maps them to its own and back. A plain
prefix swap on whole path components: `/mnt/nas` never matches `/mnt/nasty`."""

from collections.abc import Mapping
from pathlib import PurePosixPath


def _swap(path: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        if PurePosixPath(path).is_relative_to(old):
            rest = PurePosixPath(path).relative_to(old)
            return str(PurePosixPath(new) / rest) if str(rest) != "." else new
    return path


def to_local(path: str, path_map: Mapping[str, str]) -> str:
    """A farm path as this host sees it."""
    return _swap(path, sorted(path_map.items(), key=lambda kv: -len(kv[0])))


def to_farm(path: str, path_map: Mapping[str, str]) -> str:
    """This host's path in the farm's form (what other hosts can map)."""
    return _swap(path, sorted(((v, k) for k, v in path_map.items()), key=lambda kv: -len(kv[0])))
