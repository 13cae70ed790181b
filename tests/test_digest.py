"""File digests: the bytes' sha256, remembered per file version, never for a file that may still be changing."""
from __future__ import annotations

import hashlib
import os

import pytest

from tasks import digest
from tasks.digest import file_sha256, memo_dir, object_identity


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SFTFLOW_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_the_digest_is_the_sha256_of_the_bytes(tmp_path, home):
    path = tmp_path / "data.jsonl"
    path.write_bytes(os.urandom(3 * digest.BLOCK // 2))  # more than one block
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_written_just_now_is_not_remembered(tmp_path, home):
    path = tmp_path / "data.json"
    path.write_text("[]")
    file_sha256(path)
    assert not memo_dir().exists() or not any(memo_dir().iterdir())


def test_a_settled_file_is_read_once_and_a_changed_one_again(tmp_path, home, monkeypatch):
    monkeypatch.setattr(digest, "RECENT_S", -1.0)  # treat every file as settled
    path = tmp_path / "data.json"
    path.write_text('[{"a": 1}]')
    first = file_sha256(path)
    (memo,) = memo_dir().iterdir()
    memo.write_text("f" * 64)  # what is remembered is what is returned: the file is not read again
    assert file_sha256(path) == "f" * 64
    path.write_text('[{"a": 2}]')  # same size, new content
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file_sha256(path) == hashlib.sha256(b'[{"a": 2}]').hexdigest() != first


def test_an_unwritable_home_still_gives_the_digest(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("SFTFLOW_HOME", str(blocker))
    monkeypatch.setattr(digest, "RECENT_S", -1.0)
    path = tmp_path / "data.json"
    path.write_text("[]")
    assert file_sha256(path) == hashlib.sha256(b"[]").hexdigest()


def test_object_identity_comes_from_content_metadata_only():
    s3 = {"name": "b/a.json", "size": 36, "ETag": '"2939008f"', "LastModified": "2026-11-21", "VersionId": None}
    assert object_identity(s3) == object_identity(dict(s3, LastModified="2027-01-01"))  # a touch is no change
    assert object_identity(s3) != object_identity(dict(s3, ETag='"38fe66ea"'))
    assert object_identity(s3) != object_identity(dict(s3, size=37))
    assert object_identity({"name": "x", "size": 3, "Last-Modified": "Sat, 21 Nov 2026"}) is None  # hash the bytes
