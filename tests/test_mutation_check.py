"""scripts/mutation_check.py's own helpers: reading pytest's output, judging an exit code,
refusing a break whose snippet moved, and every listed break still applying to the code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import mutation_check as mc  # noqa: E402

BREAK = mc.Break(
    name="b",
    removes="g",
    file="m.py",
    old="x = 1\n",
    new="x = 2\n",
    tests="tests/t.py",
    timeout_s=5,
)
FAILED_OUTPUT = """\
.F
=========================== short test summary info ============================
FAILED tests/t.py::test_two[a] - AssertionError: boom
!!!!!!!!!!!!!!!!!!!!!!!!!! stopping after 1 failures !!!!!!!!!!!!!!!!!!!!!!!!!!!
1 failed, 1 passed in 0.52s
"""


def test_the_first_failing_test_and_the_summary_are_read_from_pytest_output():
    assert mc.first_failure(FAILED_OUTPUT) == "tests/t.py::test_two[a]"
    assert mc.first_failure("ERROR tests/t.py::test_x - fixture broke\n") == "tests/t.py::test_x"
    assert mc.first_failure("FAILED tests/t.py::test_d[truncated parquet]\n") == (
        "tests/t.py::test_d[truncated parquet]"
    )
    assert mc.first_failure("2 passed in 1s\n") == ""
    assert mc.summary_line(FAILED_OUTPUT) == "1 failed, 1 passed in 0.52s"
    assert mc.summary_line("=== 3 passed, 2 deselected in 1.0s ===\n") == (
        "3 passed, 2 deselected in 1.0s"
    )


@pytest.mark.parametrize(
    ("returncode", "output", "result", "detail"),
    [
        (1, FAILED_OUTPUT, "caught", "tests/t.py::test_two[a]"),
        (0, "2 passed in 1.0s\n", "NOT CAUGHT", "all passed: 2 passed in 1.0s"),
        (0, "1 skipped in 0.1s\n", "error", "no test ran: 1 skipped in 0.1s"),
        (2, "ERROR collecting\n1 error in 0.3s\n", "error", "pytest exit code 2"),
        (4, "ERROR: file or directory not found\n", "error", "pytest exit code 4"),
        (None, "partial output\n", "error", "timed out after 5 s"),
    ],
)
def test_only_a_test_failure_counts_as_caught(returncode, output, result, detail):
    judged = mc.judge(BREAK, mc.Run(returncode, 1.5, output))
    assert (judged.result, judged.seconds) == (result, 1.5)
    assert judged.detail.startswith(detail)
    assert bool(judged.output) == (result == "error")  # the output's tail, for errors only


def test_a_break_is_applied_once_and_refused_when_its_snippet_moved(tmp_path):
    (tmp_path / "m.py").write_text("x = 1\ny = 3\n")
    mc.apply(BREAK, tmp_path)
    assert (tmp_path / "m.py").read_text() == "x = 2\ny = 3\n"
    for text in ("y = 3\n", "x = 1\nx = 1\n"):  # gone, or no longer one place
        (tmp_path / "m.py").write_text(text)
        with pytest.raises(mc.StaleBreak, match="the code moved; update break 'b'"):
            mc.apply(BREAK, tmp_path)


def test_every_break_applies_to_the_code_and_names_a_test_file():
    names = [b.name for b in mc.BREAKS]
    assert len(set(names)) == len(names)
    for brk in mc.BREAKS:
        assert mc.occurrences(brk, REPO) == 1, f"{brk.name}: update its snippet, the code moved"
        assert brk.old != brk.new and brk.removes
        assert (REPO / brk.tests.split("::")[0].split()[0]).is_file(), brk.name


def test_a_moved_break_is_refused_and_a_slow_one_skipped_before_anything_runs(monkeypatch, capsys):
    moved = mc.Break("moved", "g", "README.md", "text no file holds\n", "", "tests/t.py")
    slow = mc.Break("slow", "g", "README.md", "text no file holds\n", "", "tests/t.py", slow=True)
    monkeypatch.setattr(mc, "BREAKS", [moved, slow])
    monkeypatch.setattr(mc, "make_copy", lambda prefix: pytest.fail("a copy was made"))
    assert mc.main(["--only", "slow"]) == 0
    assert "slow: add --include-slow" in capsys.readouterr().out
    assert mc.main([]) == 1
    out = capsys.readouterr().out
    assert "refused: its old snippet occurs 0 times in README.md" in out
    assert "update break 'moved'" in out and "not caught or errored: moved" in out
