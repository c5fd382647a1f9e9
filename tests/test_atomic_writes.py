"""runtime.atomic: replaced files get the permissions a plain open() would give them."""
import os
import stat

import pytest

from runtime import atomic


@pytest.fixture
def umask(monkeypatch):
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(value):
        os.umask(value)
        monkeypatch.setattr(atomic, "_UMASK", None)   # read afresh
    yield set_umask
    os.umask(old)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions only")
def test_new_files_follow_the_umask_and_replaced_files_keep_their_mode(tmp_path, umask):
    umask(0o022)
    shared = atomic.write_text_atomic("x", tmp_path / "shared.json")
    assert mode(shared) == 0o644                       # mkstemp alone would give 0o600
    umask(0o077)
    assert mode(atomic.write_text_atomic("x", tmp_path / "private.json")) == 0o600
    umask(0o022)
    os.chmod(shared, 0o640)
    atomic.write_text_atomic("y", shared)
    assert mode(shared) == 0o640 and shared.read_text() == "y"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_temporary_file_that_cannot_be_made_names_the_target(tmp_path, monkeypatch):
    """A read-only or full folder fails at mkstemp: the error names the file asked for, not ``.x.json.abc.tmp``."""
    import errno

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / ".x.json.abc123.tmp"))
    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as exc:
        atomic.write_text_atomic("x", tmp_path / "x.json")
    assert exc.value.filename == str(tmp_path / "x.json") and exc.value.errno == errno.EROFS
