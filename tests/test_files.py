"""serving.files.atomic_directory: the one "write beside, then rename" rule that model directories are written by
(tiny models, fetched models, the world's trained weights)."""

from __future__ import annotations

import pytest

from serving.files import atomic_directory


def _entries(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_finished_write_replaces_the_whole_directory_and_leaves_no_scratch(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old-weights.bin").write_text("old")
    with atomic_directory(target) as staged:
        assert not staged.exists() and staged.parent.parent == tmp_path  # beside the target: same file system
        assert not (target / "config.json").exists()  # nothing of the new one is visible before the block ends
        staged.mkdir()
        (staged / "config.json").write_text("{}")
    assert _entries(target) == ["config.json"]  # the old files are gone, not mixed in
    assert _entries(tmp_path) == ["model"]


def test_a_write_that_fails_leaves_the_old_directory_and_no_scratch(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("old")
    with pytest.raises(RuntimeError, match="crashed"), atomic_directory(target) as staged:
        staged.mkdir()
        (staged / "config.json").write_text("half")
        raise RuntimeError("crashed mid-write")
    assert (target / "config.json").read_text() == "old" and _entries(tmp_path) == ["model"]


def test_a_write_that_wrote_nothing_is_an_error_not_an_empty_model(tmp_path):
    target = tmp_path / "deep" / "model"  # parents are created
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_directory(target):
        pass
    assert not target.exists() and _entries(tmp_path / "deep") == []
