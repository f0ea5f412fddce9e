"""ID properties: where Cycles keeps its settings (`scene.cycles.samples` is not DNA)."""

from pi_render.blend.blocks import Block
from pi_render.blend.file import BlendFile

IDP_INT = 1
IDP_GROUP = 6
MAX_CHILDREN = 100_000  # a cycle in a corrupt list must not hang us


def _children(blend: BlendFile, group: Block) -> list[Block]:
    children: list[Block] = []
    seen: set[int] = set()
    child = blend.deref(blend.get(group, "data.group.first", "IDProperty"))
    while child is not None and child.old not in seen and len(children) < MAX_CHILDREN:
        seen.add(child.old)
        children.append(child)
        child = blend.deref(blend.get(child, "next", "IDProperty"))
    return children


def _child(blend: BlendFile, group: Block, name: str, kind: int) -> Block | None:
    for child in _children(blend, group):
        if blend.get(child, "name", "IDProperty") == name:
            if blend.get(child, "type", "IDProperty") == kind:
                return child
    return None


def scene_int_property(blend: BlendFile, scene: Block, group_name: str, name: str) -> int | None:
    """`scene[group_name][name]` when it is stored as an int, else None.

    Blender ≤4.x keeps add-on properties in `ID.properties`, 5.0+ in `ID.system_properties`.
    """
    for holder in ("id.system_properties", "id.properties"):
        if not blend.has_field("Scene", holder):
            continue
        root = blend.deref(blend.get(scene, holder, "Scene"))
        if root is None or blend.get(root, "type", "IDProperty") != IDP_GROUP:
            continue
        group = _child(blend, root, group_name, IDP_GROUP)
        value = _child(blend, group, name, IDP_INT) if group is not None else None
        if value is not None:
            return int(blend.get(value, "data.val", "IDProperty"))
    return None
