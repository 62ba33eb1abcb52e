"""benchmarks/common.recorded: what a benchmark prints is kept in its results file under a header naming the
command, the machine and its load; an interrupted run is kept too and says so."""

import pytest

from benchmarks import common


def test_printed_results_are_appended_under_a_header(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    for label in ("before", "after"):
        with common.recorded("demo", label):
            print(f"| row | {label} |")
    assert capsys.readouterr().out == "| row | before |\n| row | after |\n"
    text = (tmp_path / "demo.md").read_text()
    sections = text.split("\n## ")[1:]
    assert [section.splitlines()[-1] for section in sections] == ["| row | before |", "| row | after |"]
    for section, label in zip(sections, ("before", "after")):
        assert f" {label} (commit " in section.splitlines()[0]
        assert "cores" in section and "threads, torch " in section and "load average " in section


def test_an_interrupted_run_is_kept_and_marked(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    with pytest.raises(KeyboardInterrupt), common.recorded("demo"):
        print("| first row |")
        raise KeyboardInterrupt
    text = (tmp_path / "demo.md").read_text()
    assert "INTERRUPTED" in text.splitlines()[1] and text.rstrip().endswith("| first row |")
