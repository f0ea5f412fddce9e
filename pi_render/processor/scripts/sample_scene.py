"""Write a small sample scene: 32×32 px, Cycles at 1 sample on the CPU, frames 1..N.

    blender -b --factory-startup --python sample_scene.py -- OUT.blend [FRAMES] [SAMPLES] [SIZE]

More samples (adaptive sampling is off) make a slow scene for kill and cancel tests.
"""

import sys

import bpy

args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
out = args[0]
frames = int(args[1]) if len(args) > 1 else 3
samples = int(args[2]) if len(args) > 2 else 1
size = int(args[3]) if len(args) > 3 else 32

bpy.ops.wm.read_factory_settings(use_empty=False)
scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.samples = samples
scene.cycles.use_adaptive_sampling = False
scene.cycles.device = "CPU"
if hasattr(scene.cycles, "use_denoising"):
    scene.cycles.use_denoising = False  # Debian's Blender has no OpenImageDenoise
scene.render.resolution_x = scene.render.resolution_y = size
scene.render.resolution_percentage = 100
scene.frame_start, scene.frame_end = 1, frames
scene.render.image_settings.file_format = "PNG"
scene.render.filepath = "//render/frame_"
cube = bpy.data.objects.get("Cube")
if cube is not None:  # something that moves, so frames differ
    cube.location = (0, 0, 0)
    cube.keyframe_insert("location", frame=1)
    cube.location = (1, 1, 0)
    cube.keyframe_insert("location", frame=max(2, frames))
bpy.ops.wm.save_as_mainfile(filepath=out, compress=False)
print("wrote", out)
