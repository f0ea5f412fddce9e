"""Build .blend fixtures with real Blender and record what Blender itself reports about each.

Runs inside Blender 3.4+ (`blender -b --factory-startup --python make_fixtures.py -- OUTDIR`) or
with the bpy module (`python make_fixtures.py OUTDIR`). Writes OUTDIR/*.blend and
OUTDIR/oracle.json: {file name: the fields of pi_render's BlendInfo, as Blender sees them}.
"""

import gzip
import json
import os
import sys

import bpy

OUT = os.path.abspath(sys.argv[sys.argv.index("--") + 1] if "--" in sys.argv else sys.argv[-1])
MAJOR, MINOR = bpy.app.version[:2]
EEVEE = "BLENDER_EEVEE_NEXT" if (4, 2) <= (MAJOR, MINOR) < (5, 0) else "BLENDER_EEVEE"


def reset() -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=False)
    return bpy.context.scene


def set_format(scene: bpy.types.Scene, fmt: str, mode: str = "RGB", depth: str = "8") -> None:
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):  # 5.0+: choose the media type first
        settings.media_type = {"FFMPEG": "VIDEO", "OPEN_EXR_MULTILAYER": "MULTI_LAYER_IMAGE"}.get(
            fmt, "IMAGE"
        )
    settings.file_format = fmt
    settings.color_mode = mode
    if depth in [item.identifier for item in settings.bl_rna.properties["color_depth"].enum_items]:
        settings.color_depth = depth


def save(name: str, compress: bool = False) -> None:
    path = os.path.join(OUT, name + ".blend")
    bpy.ops.wm.save_as_mainfile(filepath=path, compress=compress, copy=True)


def build() -> list[str]:
    names = []

    scene = reset()
    save("default_plain")
    save("default_zstd", compress=True)
    names += ["default_plain", "default_zstd"]

    scene = reset()
    scene.name = "Scene"
    for extra in ("Alpha", "Shot_B"):
        new = bpy.data.scenes.new(extra)
        new.frame_start, new.frame_end = 10, 20
    bpy.context.window.scene = bpy.data.scenes["Shot_B"]
    save("three_scenes_current_Shot_B", compress=True)
    names.append("three_scenes_current_Shot_B")

    scene = reset()
    scene.frame_start, scene.frame_end, scene.frame_step, scene.frame_current = 5, 11, 3, 7
    scene.render.resolution_x, scene.render.resolution_y = 640, 360
    scene.render.resolution_percentage = 50
    scene.render.fps, scene.render.fps_base = 30, 1.001
    scene.render.filepath = "//frames/shot_####"
    scene.render.use_file_extension = False
    save("frames_resolution_fps", compress=True)
    names.append("frames_resolution_fps")

    formats = [
        ("PNG", "RGBA", "16"), ("JPEG", "RGB", "8"), ("OPEN_EXR", "RGBA", "32"),
        ("OPEN_EXR_MULTILAYER", "RGBA", "16"), ("TIFF", "BW", "16"), ("TARGA", "RGB", "8"),
        ("BMP", "RGB", "8"), ("FFMPEG", "RGB", "8"),
    ]  # fmt: skip
    for fmt, mode, depth in formats:
        scene = reset()
        set_format(scene, fmt, mode, depth)
        scene.render.filepath = "/tmp/pi-render-out/" + fmt.lower() + "_"
        save("format_" + fmt.lower(), compress=True)
        names.append("format_" + fmt.lower())

    for engine in ("CYCLES", EEVEE, "BLENDER_WORKBENCH"):
        scene = reset()
        scene.render.engine = engine
        if engine == "CYCLES":
            scene.cycles.samples = 7
        save("engine_" + engine.lower(), compress=True)
        names.append("engine_" + engine.lower())

    scene = reset()
    bpy.data.objects["Camera"].name = "ShotCam"
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 4096  # set to the default value: stored all the same
    save("camera_renamed", compress=True)
    names.append("camera_renamed")

    scene = reset()
    scene.camera = None
    save("no_camera", compress=True)
    names.append("no_camera")
    return names


def report(path: str) -> dict[str, object]:
    """What Blender says about a file: the oracle for pi_render's reader."""
    bpy.ops.wm.open_mainfile(filepath=path)
    scene = bpy.context.scene
    render, image = scene.render, scene.render.image_settings
    cycles = getattr(scene, "cycles", None)
    major, minor, sub = bpy.data.version
    return {
        "file_version": major * 100 + minor,
        "file_subversion": sub,
        "scenes": [s.name for s in bpy.data.scenes],
        "scene": {
            "name": scene.name,
            "frame_start": scene.frame_start,
            "frame_end": scene.frame_end,
            "frame_step": scene.frame_step,
            "frame_current": scene.frame_current,
            "resolution_x": render.resolution_x,
            "resolution_y": render.resolution_y,
            "resolution_percentage": render.resolution_percentage,
            "fps": render.fps,
            "fps_base": round(render.fps_base, 6),
            "engine": render.engine,
            "file_format": image.file_format,
            "color_mode": image.color_mode,
            "color_depth": image.color_depth,
            "output_path": render.filepath,
            "use_file_extension": render.use_file_extension,
            "camera": scene.camera.name if scene.camera else None,
            "cycles_samples": (
                cycles.samples if cycles is not None and cycles.is_property_set("samples") else None
            ),
        },
    }


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    names = build()
    plain = os.path.join(OUT, "default_plain.blend")
    with open(plain, "rb") as src, gzip.open(os.path.join(OUT, "default_gzip.blend"), "wb") as dst:
        dst.write(src.read())
    names.append("default_gzip")
    oracle = {name: report(os.path.join(OUT, name + ".blend")) for name in names}
    oracle["_blender"] = {"version": bpy.app.version_string}
    with open(os.path.join(OUT, "oracle.json"), "w") as handle:
        json.dump(oracle, handle, indent=1, sort_keys=True)
    print(f"wrote {len(names)} fixtures to {OUT}")


main()
