"""Build a Blender project whose .blend files use external files of every kind, with real Blender.

Runs inside Blender 3.4+ (`blender -b --factory-startup -noaudio --python-exit-code 1 --python
make_project.py -- OUTDIR`) or with the bpy module (`python make_project.py OUTDIR`). Everything
it uses is made here (images, sound, Alembic, point cache) except one TrueType font, copied from
the machine's fonts. Writes under OUTDIR:

    main.blend                 the shot: links lib/lib.blend, lib/cycle_a.blend, abs/abs_lib.blend
    blendcache_main/           cloth point cache, baked for frames 1-3
    textures/wood.png          image texture (main and lib/lib.blend as //../textures/wood.png)
    seq/frame_000[1-5].png     image sequence (source SEQUENCE), in a material
    udim/tile.100[12].png      UDIM image, //udim/tile.<UDIM>.png
    cache/anim.abc             Alembic, read by a MeshSequenceCache modifier (a placeholder file
                               where Blender has no Alembic, e.g. Debian's 3.4.1)
    fonts/font.ttf             text object's font
    strips/s_000[12].png       sequencer image strip (the scene renders 3D: use_sequencer off)
    sounds/beep.wav            sound data-block (fake user)
    lib/lib.blend              LibCube, parented to DeepCone linked from lib/nested/deep.blend
    lib/cycle_a.blend, lib/cycle_b.blend   each links an object from the other
    abs/abs_lib.blend          linked from main.blend by an absolute path
    broken/broken.blend        links //missing_lib.blend and uses //textures/missing.png: both gone
    oracle.json                {blend path relative to OUTDIR: {"paths", "local_paths"}: Blender's
                               own sorted bpy.utils.blend_paths(absolute=True, packed=False,
                               local=False / True)}, "_blender": {version, outdir, alembic}
"""

import glob
import json
import math
import os
import shutil
import struct
import sys
import wave

import bpy

OUT = os.path.abspath(sys.argv[sys.argv.index("--") + 1] if "--" in sys.argv else sys.argv[-1])
BLENDS = [
    "main.blend", "lib/lib.blend", "lib/nested/deep.blend", "lib/cycle_a.blend",
    "lib/cycle_b.blend", "abs/abs_lib.blend", "broken/broken.blend", "extras.blend",
]  # fmt: skip
FONT_DIRS = ["/usr/share/fonts", "/usr/local/share/fonts", "/usr/share/blender"]


def path(rel: str) -> str:
    full = os.path.join(OUT, rel)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    return full


def rel(full: str) -> str:
    """`//…`, relative to the .blend open now (it must have been saved already)."""
    return str(bpy.path.relpath(full))


def reset() -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.preferences.filepaths.save_version = 0  # no .blend1 backups
    return bpy.context.scene


def save(name: str, relative_remap: bool = True) -> None:
    bpy.ops.wm.save_as_mainfile(filepath=path(name), relative_remap=relative_remap)


def link(obj: bpy.types.Object) -> bpy.types.Object:
    bpy.context.scene.collection.objects.link(obj)
    return obj


def mesh_object(name: str, kind: str, location: tuple[float, float, float]) -> bpy.types.Object:
    add = {"cube": bpy.ops.mesh.primitive_cube_add, "cone": bpy.ops.mesh.primitive_cone_add,
           "plane": bpy.ops.mesh.primitive_plane_add}[kind]  # fmt: skip
    add(location=location)
    obj = bpy.context.view_layer.objects.active
    obj.name = obj.data.name = name
    return obj


def write_png(full: str, rgb: tuple[float, float, float], size: int = 8) -> None:
    os.makedirs(os.path.dirname(full), exist_ok=True)
    image = bpy.data.images.new("png_writer", size, size)
    pixels = []
    for y in range(size):
        for x in range(size):
            shade = 0.75 + 0.25 * ((x + y) % 2)
            pixels += [rgb[0] * shade, rgb[1] * shade, rgb[2] * shade, 1.0]
    image.pixels[:] = pixels
    image.filepath_raw = full
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)


def load_image(full: str, source: str = "FILE") -> bpy.types.Image:
    image = bpy.data.images.load(full)
    image.source = source
    image.filepath = rel(full)
    return image


def image_material(name: str, image: bpy.types.Image) -> bpy.types.Material:
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # 3.4: no nodes until asked; 5.0: always nodes
        material.use_nodes = True
    nodes = material.node_tree.nodes
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    if image.source == "SEQUENCE":
        texture.image_user.frame_duration = 5
        texture.image_user.frame_start = 1
        texture.image_user.use_auto_refresh = True
    bsdf = nodes.get("Principled BSDF")
    material.node_tree.links.new(texture.outputs["Color"], bsdf.inputs["Base Color"])
    return material


def link_objects(blend: str, names: list[str], relative: bool = True) -> list[bpy.types.Object]:
    with bpy.data.libraries.load(blend, link=True, relative=relative) as (_src, dst):
        dst.objects = list(names)
    return [link(obj) for obj in dst.objects]


def look_at(obj: bpy.types.Object, target: tuple[float, float, float]) -> None:
    direction = obj.location.copy()
    for axis in range(3):
        direction[axis] = target[axis] - direction[axis]
    obj.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()


def find_font() -> str:
    for base in FONT_DIRS:
        found = sorted(glob.glob(os.path.join(base, "**", "*.ttf"), recursive=True))
        preferred = [f for f in found if os.path.basename(f) == "DejaVuSans.ttf"]
        if preferred or found:
            return (preferred or found)[0]
    raise SystemExit("make_project: no .ttf font found under " + ", ".join(FONT_DIRS))


def write_wav(full: str) -> None:
    os.makedirs(os.path.dirname(full), exist_ok=True)
    rate = 8000
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
        for i in range(rate // 10)
    )
    with wave.open(full, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(frames)


def strips_of(editor: bpy.types.SequenceEditor) -> bpy.types.bpy_prop_collection:
    return editor.strips if hasattr(editor, "strips") else editor.sequences  # 5.0 / 3.4


def set_png(scene: bpy.types.Scene) -> None:
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):  # 5.0+: choose the media type first
        settings.media_type = "IMAGE"
    settings.file_format = "PNG"


# ---------------------------------------------------------------- libraries


def build_libraries() -> None:
    reset()
    mesh_object("DeepCone", "cone", (0.0, 0.0, 0.0))
    save("lib/nested/deep.blend")

    reset()
    save("lib/lib.blend")  # saved first, so that the paths below can be relative to it
    (deep,) = link_objects(path("lib/nested/deep.blend"), ["DeepCone"])
    cube = mesh_object("LibCube", "cube", (0.0, 0.0, 0.0))
    cube.parent = deep  # linking LibCube pulls DeepCone in: main -> lib -> nested/deep
    cube.data.materials.append(image_material("LibWood", load_image(path("textures/wood.png"))))
    save("lib/lib.blend")

    reset()
    mesh_object("CycleA", "cube", (10.0, 0.0, 0.0))
    save("lib/cycle_a.blend")
    reset()
    save("lib/cycle_b.blend")
    link_objects(path("lib/cycle_a.blend"), ["CycleA"])
    mesh_object("CycleB", "cube", (12.0, 0.0, 0.0))
    save("lib/cycle_b.blend")
    bpy.ops.wm.open_mainfile(filepath=path("lib/cycle_a.blend"))
    link_objects(path("lib/cycle_b.blend"), ["CycleB"])
    save("lib/cycle_a.blend")

    reset()
    mesh_object("AbsThing", "cube", (14.0, 0.0, 0.0))
    save("abs/abs_lib.blend")


def export_alembic() -> None:
    """cache/anim.abc: a cube growing over frames 1-3 (a shape key), exported by Blender itself.

    A Blender built without Alembic (Debian's 3.4.1) gets a placeholder file instead: it cannot
    read the cache either, so the reference is all there is to test.
    """
    if not bpy.app.alembic.supported:
        with open(path("cache/anim.abc"), "w") as handle:
            handle.write("placeholder: this Blender was built without Alembic\n")
        return
    reset()
    obj = mesh_object("AbcCube", "cube", (0.0, 8.0, 0.0))
    obj.shape_key_add(name="Basis")
    grow = obj.shape_key_add(name="Grow")  # a deforming mesh: the import adds the modifier
    for point in grow.data:
        point.co *= 1.5
    for frame, value in ((1, 0.0), (3, 1.0)):
        grow.value = value
        grow.keyframe_insert("value", frame=frame)
    bpy.ops.wm.alembic_export(filepath=path("cache/anim.abc"), start=1, end=3)


def cache_object() -> None:
    """An object whose mesh is read from cache/anim.abc by a MeshSequenceCache modifier."""
    abc = path("cache/anim.abc")
    if bpy.app.alembic.supported:
        bpy.ops.wm.alembic_import(filepath=abc)
        obj = bpy.context.selected_objects[0]
    else:
        bpy.ops.cachefile.open(filepath=abc)
        obj = mesh_object("AbcCube", "cube", (0.0, 8.0, 0.0))
        modifier = obj.modifiers.new("MeshSequenceCache", "MESH_SEQUENCE_CACHE")
        modifier.cache_file = bpy.data.cache_files[-1]
        modifier.object_path = "/AbcCube/AbcCube"
    assert [m for m in obj.modifiers if m.type == "MESH_SEQUENCE_CACHE"], obj.modifiers[:]
    for cache in bpy.data.cache_files:
        cache.filepath = rel(abc)
    obj.name = "AbcCube"


# ---------------------------------------------------------------- main.blend


def build_main() -> None:
    scene = reset()
    save("main.blend")

    wood = load_image(path("textures/wood.png"))
    floor = mesh_object("Floor", "plane", (0.0, 0.0, -1.01))
    floor.scale = (3.0, 3.0, 1.0)
    floor.data.materials.append(image_material("Wood", wood))

    for frame in range(1, 6):
        write_png(path(f"seq/frame_{frame:04d}.png"), (0.1 * frame, 0.2, 0.6))
    sequence = load_image(path("seq/frame_0001.png"), "SEQUENCE")
    screen = mesh_object("Screen", "plane", (-6.0, 0.0, 0.0))
    screen.data.materials.append(image_material("Screen", sequence))

    write_png(path("udim/tile.1001.png"), (0.9, 0.1, 0.1))
    write_png(path("udim/tile.1002.png"), (0.1, 0.9, 0.1))
    udim = bpy.data.images.load(path("udim/tile.1001.png"))
    udim.name = "tile.<UDIM>.png"
    udim.source = "TILED"
    udim.filepath = "//udim/tile.<UDIM>.png"
    if 1002 not in [tile.number for tile in udim.tiles]:
        udim.tiles.new(tile_number=1002)
    udim.use_fake_user = True

    # packed into the file: needs nothing on disk (its recorded path is gone)
    write_png(path("packed_src.png"), (0.3, 0.3, 0.3))
    packed = bpy.data.images.load(path("packed_src.png"))
    packed.pack()
    packed.filepath_raw = "//gone/packed.png"
    packed.use_fake_user = True
    os.remove(path("packed_src.png"))
    # a path saved on Windows: backslashes
    windows = bpy.data.images.load(path("textures/wood.png"), check_existing=False)
    windows.name = "WindowsWood"
    windows.filepath_raw = "//textures\\wood.png"
    windows.use_fake_user = True

    cache_object()

    font_file = path("fonts/font.ttf")
    shutil.copyfile(find_font(), font_file)
    font = bpy.data.fonts.load(font_file)
    font.filepath = rel(font_file)
    text = bpy.data.curves.new("Title", "FONT")
    text.body = "pi"
    text.font = font
    link(bpy.data.objects.new("Title", text)).location = (0.0, -8.0, 0.0)

    write_png(path("strips/s_0001.png"), (0.5, 0.5, 0.1))
    write_png(path("strips/s_0002.png"), (0.1, 0.5, 0.5))
    editor = scene.sequence_editor_create()
    strip = strips_of(editor).new_image("Strip", path("strips/s_0001.png"), 1, 1)
    strip.elements.append("s_0002.png")
    strip.directory = rel(path("strips")) + "/"
    scene.render.use_sequencer = False  # any image strip would make the render the edit

    beep = path("sounds/beep.wav")
    write_wav(beep)
    sound = bpy.data.sounds.load(beep)
    sound.filepath = rel(beep)
    sound.use_fake_user = True

    (cube,) = link_objects(path("lib/lib.blend"), ["LibCube"])
    link_objects(path("lib/cycle_a.blend"), ["CycleA"])
    link_objects(path("abs/abs_lib.blend"), ["AbsThing"], relative=False)

    camera = link(bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera")))
    camera.location = (4.5, -4.5, 3.5)
    look_at(camera, (0.0, 0.0, 0.0))
    scene.camera = camera
    sun = link(bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN")))
    sun.data.energy = 4.0
    sun.rotation_euler = (0.6, 0.2, 0.8)
    if scene.world is None:
        scene.world = bpy.data.worlds.new("World")
    scene.world.color = (0.05, 0.05, 0.05)

    cloth = mesh_object("Cloth", "plane", (0.0, 14.0, 2.0))
    modifier = cloth.modifiers.new("Cloth", "CLOTH")
    cache = modifier.point_cache
    cache.frame_start, cache.frame_end = 1, 3

    render = scene.render
    render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False  # Debian's 3.4.1 has no OpenImageDenoise: it would fail
    scene.cycles.device = "CPU"
    render.resolution_x = render.resolution_y = 32
    render.resolution_percentage = 100
    render.filepath = "//render/f_####"
    set_png(scene)
    scene.frame_start, scene.frame_end, scene.frame_current = 1, 3, 1
    save("main.blend", relative_remap=False)

    cache.use_disk_cache = True  # needs the saved path: blendcache_main/ beside main.blend
    bpy.ops.ptcache.bake_all(bake=True)
    scene.frame_set(1)
    save("main.blend", relative_remap=False)
    assert cube.library is not None


def build_broken() -> None:
    """broken/broken.blend, then its library and texture are deleted."""
    reset()
    mesh_object("Gone", "cube", (0.0, 0.0, 0.0))
    save("broken/missing_lib.blend")
    scene = reset()
    save("broken/broken.blend")
    link_objects(path("broken/missing_lib.blend"), ["Gone"])
    write_png(path("broken/textures/missing.png"), (0.2, 0.2, 0.9))
    plane = mesh_object("Floor", "plane", (0.0, 0.0, -1.0))
    plane.data.materials.append(
        image_material("Missing", load_image(path("broken/textures/missing.png")))
    )
    camera = link(bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera")))
    camera.location = (4.5, -4.5, 3.5)
    look_at(camera, (0.0, 0.0, 0.0))
    scene.camera = camera
    scene.render.resolution_x = scene.render.resolution_y = 32
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.cycles.device = "CPU"
    scene.cycles.use_denoising = False
    scene.frame_start, scene.frame_end = 1, 2
    save("broken/broken.blend")
    os.remove(path("broken/missing_lib.blend"))
    os.remove(path("broken/textures/missing.png"))


def build_extras() -> None:
    """extras.blend, never rendered: the kinds the shot does not use (mesh cache, fluid cache
    folder, VDB volume, IES light, an external text)."""
    reset()
    files = {
        "cache/anim.pc2": b"PC2",
        "fluid_cache/config/config_0001.uni": b"uni",
        "vdb/smoke.vdb": b"vdb",
        "ies/light.ies": b"IESNA:LM-63-2002",
        "scripts/tool.py": b"#",
    }
    for name, data in files.items():
        os.makedirs(os.path.dirname(path(name)), exist_ok=True)
        with open(path(name), "wb") as handle:
            handle.write(data)
    cached = mesh_object("Cached", "cube", (0.0, 0.0, 0.0))
    mesh_cache = cached.modifiers.new("MeshCache", "MESH_CACHE")
    mesh_cache.cache_format = "PC2"
    mesh_cache.filepath = "//cache/anim.pc2"
    domain = mesh_object("Domain", "cube", (3.0, 0.0, 0.0))
    fluid = domain.modifiers.new("Fluid", "FLUID")
    fluid.show_viewport = fluid.show_render = False  # a live simulation would run (and crash)
    fluid.fluid_type = "DOMAIN"
    fluid.domain_settings.cache_directory = "//fluid_cache"
    volume = bpy.data.volumes.new("Smoke")
    volume.filepath = "//vdb/smoke.vdb"
    link(bpy.data.objects.new("Smoke", volume))
    light = bpy.data.lights.new("Spot", "SPOT")
    light.use_nodes = True
    ies = light.node_tree.nodes.new("ShaderNodeTexIES")
    ies.mode = "EXTERNAL"
    ies.filepath = "//ies/light.ies"
    link(bpy.data.objects.new("Spot", light))
    bpy.data.texts.load(path("scripts/tool.py"))
    save("extras.blend")


def report(full: str) -> dict[str, list[str]]:
    """What Blender says a file uses: the oracle for pi_render's asset tracer."""
    bpy.ops.wm.open_mainfile(filepath=full)  # missing libraries: warnings, no exception
    return {
        "paths": sorted(bpy.utils.blend_paths(absolute=True, packed=False, local=False)),
        "local_paths": sorted(bpy.utils.blend_paths(absolute=True, packed=False, local=True)),
    }


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    reset()
    write_png(path("textures/wood.png"), (0.6, 0.35, 0.15))
    build_libraries()
    export_alembic()
    build_main()
    build_broken()
    build_extras()
    oracle: dict[str, object] = {name: report(os.path.join(OUT, name)) for name in BLENDS}
    oracle["_blender"] = {
        "version": bpy.app.version_string,
        "outdir": OUT,
        "alembic": bool(bpy.app.alembic.supported),
    }
    with open(os.path.join(OUT, "oracle.json"), "w") as handle:
        json.dump(oracle, handle, indent=1, sort_keys=True)
    print(f"wrote {len(BLENDS)} .blend files and oracle.json to {OUT}")


main()
