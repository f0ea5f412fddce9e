"""The heap trimmer gives memory back once per idle spell after work, not on every empty poll."""

from pi_render.heap import MIN_INTERVAL_S, HeapTrimmer, _malloc_trim


def test_trims_once_per_idle_spell_after_work_and_never_more_often_than_its_interval() -> None:
    now = [100.0]
    trims: list[int] = []

    def trim(pad: int) -> int:
        trims.append(pad)
        return 1

    trimmer = HeapTrimmer(clock=lambda: now[0], trim=trim)
    assert not trimmer.idle() and trims == []  # nothing was done: nothing to give back
    trimmer.worked()
    assert trimmer.idle() and trims == [0]
    assert not trimmer.idle()  # the same idle spell
    trimmer.worked()
    now[0] += MIN_INTERVAL_S / 2
    assert not trimmer.idle()  # too soon after the last
    now[0] += MIN_INTERVAL_S
    assert trimmer.idle() and trims == [0, 0]


def test_glibc_malloc_trim_is_found_and_runs() -> None:
    trim = _malloc_trim()
    assert trim is not None  # Debian: glibc
    assert trim(0) in (0, 1)
