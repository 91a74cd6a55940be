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


def test_a_store_file_is_replaced_whole_or_left_as_it_was(tmp_path, monkeypatch):
    """write_atomic and open_atomic, the same rule for a campaign's store files on any fsspec file system: a failed
    write (the disk full after half the bytes, a stream that breaks off) leaves the old file and no temporary."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    from serving.files import open_atomic, write_atomic

    fs = fsspec.filesystem("file")
    target = str(tmp_path / "part.json")
    write_atomic(fs, target, b"old")
    real = LocalFileSystem.pipe_file

    def half_then_full(self, path, value, *args, **kwargs):
        real(self, path, value[: len(value) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(LocalFileSystem, "pipe_file", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(fs, target, b"new contents")
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="broke off"), open_atomic(fs, target) as f:
        f.write(b"half of the new")
        raise RuntimeError("the stream broke off")
    assert (tmp_path / "part.json").read_bytes() == b"old" and _entries(tmp_path) == ["part.json"]
    with open_atomic(fs, target) as f:
        f.write(b"new, streamed")
    write_atomic(fsspec.filesystem("memory"), "/files-test/part.json", b"put once")  # an object store: one PUT
    assert (tmp_path / "part.json").read_bytes() == b"new, streamed" and _entries(tmp_path) == ["part.json"]
    assert fsspec.filesystem("memory").cat_file("/files-test/part.json") == b"put once"
