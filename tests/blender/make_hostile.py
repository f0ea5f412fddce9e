"""Build two hostile projects with real Blender (3.4+): run as
`blender -b --factory-startup -noaudio --python-exit-code 1 --python make_hostile.py -- OUT SECRET
ESCAPE`.

    OUT/alias/lib.blend     a plane whose texture is SECRET by its absolute path
    OUT/alias/alias.blend   a symlink to lib.blend
    OUT/alias/main.blend    links the plane through //alias.blend and its material through
                            //lib.blend: one file, reached by two paths
    OUT/writer/main.blend   a plane textured with //Image0001.png, and a compositor File Output
                            node that writes //Image0001.png over it when it renders
    OUT/escape/main.blend   a compositor File Output node writing into ESCAPE, an absolute path
                            outside everything the render is given
"""

import os
import struct
import sys
import zlib

import bpy

OUT, SECRET, ESCAPE = sys.argv[sys.argv.index("--") + 1 :][:3]


def write_png(path: str, rgb: tuple[int, int, int]) -> None:
    raw = b"".join(b"\0" + bytes(rgb) * 8 for _ in range(8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))  # fmt: skip


def empty() -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = 32
    scene.frame_start = scene.frame_end = 1
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.location = (0.0, 0.0, 5.0)
    scene.collection.objects.link(camera)
    scene.camera = camera
    return scene


def textured_plane(scene: bpy.types.Scene, image_path: str) -> bpy.types.Object:
    bpy.ops.mesh.primitive_plane_add(size=4.0)
    plane = bpy.context.active_object
    plane.name = "Plane"
    material = bpy.data.materials.new("M")
    material.use_nodes = True
    node = material.node_tree.nodes.new("ShaderNodeTexImage")
    node.image = bpy.data.images.load(image_path)
    node.image.filepath = image_path
    shader = material.node_tree.nodes["Principled BSDF"]
    material.node_tree.links.new(node.outputs["Color"], shader.inputs["Base Color"])
    plane.data.materials.append(material)
    return plane


def alias_project() -> None:
    folder = os.path.join(OUT, "alias")
    os.makedirs(folder, exist_ok=True)
    scene = empty()
    textured_plane(scene, SECRET)
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(folder, "lib.blend"), relative_remap=False)
    os.symlink("lib.blend", os.path.join(folder, "alias.blend"))
    scene = empty()
    with bpy.data.libraries.load(os.path.join(folder, "alias.blend"), link=True,
                                 relative=True) as (_, into):  # fmt: skip
        into.objects = ["Plane"]
    for obj in into.objects:
        scene.collection.objects.link(obj)
    with bpy.data.libraries.load(os.path.join(folder, "lib.blend"), link=True,
                                 relative=True) as (_, into):  # fmt: skip
        into.materials = ["M"]
    for material in into.materials:
        material.use_fake_user = True
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(folder, "main.blend"))


def file_output(scene: bpy.types.Scene, base_path: str) -> None:
    scene.use_nodes = True
    tree = scene.node_tree
    output = tree.nodes.new("CompositorNodeOutputFile")
    output.base_path = base_path
    output.file_slots[0].path = "Image"
    output.format.file_format = "PNG"
    tree.links.new(tree.nodes["Render Layers"].outputs["Image"], output.inputs[0])


def escape_project() -> None:
    folder = os.path.join(OUT, "escape")
    os.makedirs(folder, exist_ok=True)
    scene = empty()
    file_output(scene, ESCAPE)
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(folder, "main.blend"))


def writer_project() -> None:
    folder = os.path.join(OUT, "writer")
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, "Image0001.png")
    write_png(target, (200, 30, 30))
    scene = empty()
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(folder, "main.blend"))
    textured_plane(scene, "//Image0001.png")
    file_output(scene, "//")
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(folder, "main.blend"))
    os.remove(os.path.join(folder, "main.blend1"))


alias_project()
writer_project()
escape_project()
