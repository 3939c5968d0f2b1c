"""The garbage collector's policy during a run: fewer collections, nothing left changed."""

import gc

from engine.collector import tuned_collector


def test_a_run_makes_no_young_collection_for_what_survives_a_default_threshold():
    before = gc.get_threshold()
    kept = []
    with tuned_collector():
        assert gc.get_freeze_count() > 0  # what existed is never walked again
        young = gc.get_stats()[0]["collections"]
        kept += [[n] for n in range(before[0] * 20)]  # would collect ~20 times by default
        assert gc.get_stats()[0]["collections"] == young
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    assert len(kept) == before[0] * 20


def test_the_policy_is_restored_when_the_run_fails():
    before = gc.get_threshold()
    try:
        with tuned_collector():
            raise KeyError("boom")
    except KeyError:
        pass
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, 0)


def test_overlapping_runs_restore_the_policy_when_the_last_ends():
    before = gc.get_threshold()
    first, second = tuned_collector(), tuned_collector()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first run ends while the second still runs
    assert gc.get_threshold()[0] > before[0] and gc.get_freeze_count() > 0
    second.__exit__(None, None, None)
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, 0)
