"""Run inside Blender (`--python`, or imported by a bpy interpreter): prints the compute devices
Cycles sees, as one marker line of JSON. Imports only bpy and the stdlib."""

import json
import sys

import bpy

BACKENDS = ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL")


def main() -> None:
    found = []
    try:
        prefs = bpy.context.preferences.addons["cycles"].preferences
    except (KeyError, AttributeError):  # a build without Cycles
        prefs = None
    for backend in BACKENDS if prefs is not None else ():
        try:
            devices = prefs.get_devices_for_type(backend)
        except (TypeError, ValueError, AttributeError):  # a backend this build does not know
            continue
        for device in devices:
            if device.type != "CPU":
                found.append({"backend": backend, "name": device.name, "id": device.id})
    sys.stdout.write("@@PI_RENDER gpus " + json.dumps(found, separators=(",", ":")) + "\n")
    sys.stdout.flush()


main()
