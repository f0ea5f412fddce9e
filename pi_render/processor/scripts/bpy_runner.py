"""Render with the `bpy` module when no Blender executable is installed.

    python bpy_runner.py BLEND OUTPUT_PATTERN FRAMES SCENE ENGINE FORMAT THREADS ALLOW_SCRIPTS \
        [DEVICE]

Prints the same marker lines as progress_hooks.py and Blender's own `Saved:` lines.
"""

import sys

import bpy


def frames_of(spec: str) -> list[int]:
    frames: list[int] = []
    for part in spec.split(","):
        if ".." in part:
            start, end = part.split("..")
            frames += range(int(start), int(end) + 1)
        else:
            frames.append(int(part))
    return frames


def main() -> None:
    blend, pattern, spec, scene_name, engine, file_format, threads, scripts = sys.argv[1:9]
    device = sys.argv[9] if len(sys.argv) > 9 else ""
    bpy.context.preferences.filepaths.use_scripts_auto_execute = scripts == "1"
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene = bpy.data.scenes[scene_name] if scene_name else bpy.context.scene
    if engine:
        scene.render.engine = engine
    if file_format:
        scene.render.image_settings.file_format = file_format
    scene.render.use_file_extension = True
    scene.render.threads_mode, scene.render.threads = "FIXED", max(1, int(threads) or 1)
    if device:
        import device_setup  # type: ignore[import-not-found]

        device_setup.apply(device)
    import progress_hooks  # type: ignore[import-not-found]  # noqa: F401  (handlers, after load)

    for frame in frames_of(spec):
        scene.frame_start = scene.frame_end = frame
        scene.render.filepath = pattern
        bpy.ops.render.render(animation=True, scene=scene.name)


sys.path.insert(0, __file__.rsplit("/", 1)[0])
main()
