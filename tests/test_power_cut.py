"""Power cuts at random points (LazyFS: tests/lazyfs.py, tests/powercut.py): what was
acknowledged survives, databases stay intact, nothing completed runs again, every frame listed
is on disk whole. `PI_RENDER_POWER_CUTS` sets the number of cuts (CI runs a few; the full run
in docs/reliability.md runs 100+). The harness must be able to fail: a build whose records skip
their fsyncs (commits without the WAL's fsync, through sitecustomize) is caught."""

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from powercut import lazy_daemon, run_power_cuts

CUTS = int(os.environ.get("PI_RENDER_POWER_CUTS", "12"))
SEED = int(os.environ.get("PI_RENDER_POWER_CUT_SEED", "16"))
UNSAFE = """\
from pi_render.manifest import base

base.DurableJsonTable._sync_wal = lambda self: None  # the deliberately non-durable build
"""


def fuse_or_skip() -> None:
    missing = [what for what, there in [("/dev/fuse", Path("/dev/fuse").exists()),
                                        ("fusermount3", shutil.which("fusermount3"))]
               if not there]  # fmt: skip
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError):
        missing.append("mfusepy (libfuse3)")
    if os.geteuid() != 0:
        missing.append("root (to mount)")
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must be able to run the power-cut harness: missing {missing}")
        pytest.skip(f"needs {', '.join(missing)}")


def test_acknowledged_work_survives_power_cuts_at_random_points(
    tmp_path: Path, socket_dir: Path, scenes: dict[str, Path]
) -> None:
    fuse_or_skip()
    work = tmp_path / "work"  # outside LazyFS: the journal of real runs, flaky markers
    work.mkdir()
    with lazy_daemon(tmp_path, socket_dir) as (mount, daemon):
        outcome = run_power_cuts(mount, daemon, CUTS, SEED, work, scenes["tiny"])
    kinds = Counter(outcome.acknowledged.values())
    print(f"{outcome.cuts} power cuts; acknowledged {dict(kinds)}; "
          f"{len(outcome.seen_completed)} seen completed before a cut")  # fmt: skip
    assert not outcome.violations, "\n".join(outcome.violations)
    assert outcome.cuts == CUTS and outcome.acknowledged  # work was done between the cuts


def test_the_harness_catches_records_that_skip_their_fsyncs(
    tmp_path: Path, socket_dir: Path, scenes: dict[str, Path]
) -> None:
    fuse_or_skip()
    work = tmp_path / "work"
    (work / "unsafe").mkdir(parents=True)
    (work / "unsafe" / "sitecustomize.py").write_text(UNSAFE)
    env = {"PYTHONPATH": os.pathsep.join([str(work / "unsafe"), str(Path(__file__).parent /
                                          "plugins")])}  # fmt: skip
    with lazy_daemon(tmp_path, socket_dir, env) as (mount, daemon):
        outcome = run_power_cuts(mount, daemon, 2, SEED, work, scenes["tiny"],
                                 pick_cut=lambda rng: 2000)  # fmt: skip
    assert any("is gone" in v for v in outcome.violations), outcome.violations
