"""Does a long benchmark run keep what it finished: a run stopped part-way and started again
with the same settings measures only the parts that are left, and never reuses parts measured
under other settings?"""

from __future__ import annotations

import json

from protoscope.bench.common import Checkpoint


def test_a_restarted_run_keeps_finished_parts_and_measures_the_rest(tmp_path):
    path = tmp_path / "full.partial.json"
    settings = {"length": 32, "batches": (1, 8)}
    calls = []

    def measure(name, value):
        def compute():
            calls.append(name)
            return value
        return compute

    first = Checkpoint(path, settings)
    assert first.part("timed", measure("timed", {"rates": (1.5, 2.5)})) == {"rates": [1.5, 2.5]}
    assert json.loads(path.read_text())["parts"]["timed"] == {"rates": [1.5, 2.5]}
    # ... interrupted here; the second invocation has the same settings.
    second = Checkpoint(path, settings)
    assert second.reused == ["timed"]
    assert second.part("timed", measure("timed again", None)) == {"rates": [1.5, 2.5]}
    assert second.part("memory", measure("memory", [{4: 1}])) == [{"4": 1}]
    assert calls == ["timed", "memory"]
    assert set(second.costs) == {"timed", "memory"}
    assert all(c["seconds"] >= 0 and c["cpu_seconds"] >= 0 for c in second.costs.values())
    second.finish()
    assert not path.exists()


def test_parts_measured_under_other_settings_are_measured_again(tmp_path):
    path = tmp_path / "full.partial.json"
    Checkpoint(path, {"length": 16}).part("timed", lambda: 1)
    other = Checkpoint(path, {"length": 32})
    assert other.reused == []
    assert other.part("timed", lambda: 2) == 2
    assert json.loads(path.read_text())["settings"] == {"length": 32}


def test_without_a_path_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    smoke = Checkpoint(None, {"length": 4})
    assert smoke.part("timed", lambda: (1, 2)) == [1, 2]
    smoke.finish()
    assert list(tmp_path.iterdir()) == []
