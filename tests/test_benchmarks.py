"""The benchmark scripts run from a fresh install (smoke runs: tiny settings, no timing)."""

import json
import sys

from support import REPO, run


def test_frontier_study_writes_its_figure_table_and_json(tmp_path):
    result = run([sys.executable, str(REPO / "benchmarks" / "frontier.py"), "--seeds", "1",
                  "--settings", "hk-interleave,macro-replicate", "--variants",
                  "dekf,rpf gaussian N=5,dpf N=80 lean", "--steps", "12", "--out", tmp_path])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "frontier.md").read_text()
    assert "### hk-interleave (settings chosen here)" in table
    assert "### macro-replicate (validation" in table
    data = json.loads((tmp_path / "frontier.json").read_text())
    assert set(data["summary"]) == {"hk-interleave", "macro-replicate"}
    assert len(data["runs"]) == 2 * 3
    for row in data["runs"]:
        assert row["final_mse"] > 0 and row["steps_per_second"] > 0
    dekf = data["summary"]["hk-interleave"]["dekf"]
    assert dekf["bytes_per_step"]["mean"] > 0
