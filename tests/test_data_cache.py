"""The names.txt cache: one shared folder, checksum-verified, atomic, with a clear offline error.

Every script that trains on names.txt carries its own copy of ensure_dataset(); each copy is
tested here. No test touches the network: downloads come from local file:// URLs, and "no
network" is a fake urlopen that raises the error a dead connection raises.
"""
import hashlib
import subprocess
import sys
import textwrap
import urllib.error

import pytest

from support import ROOT, implemented_specs, load_script

DATA_SCRIPTS = [s for s in implemented_specs() if hasattr(load_script(s.path), "ensure_dataset")]
GOOD = b"emma\nolivia\nava\n"
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


@pytest.fixture(params=DATA_SCRIPTS, ids=lambda s: s.name)
def script(request, tmp_path, monkeypatch):
    """The script's module with its data source pointed at a local file holding GOOD."""
    module = load_script(request.param.path)
    source = tmp_path / "source" / "names.txt"
    source.parent.mkdir()
    source.write_bytes(GOOD)
    monkeypatch.setattr(module, "DATA_URL", source.as_uri())
    monkeypatch.setattr(module, "DATA_SHA256", GOOD_SHA)
    cache = tmp_path / "cache"
    monkeypatch.setenv("NO_MAGIC_DATA_DIR", str(cache))
    module.test_source, module.test_cache = source, cache
    return module


def test_downloads_into_the_shared_cache(script):
    path = script.ensure_dataset()
    assert path == str(script.test_cache / "names.txt")
    assert (script.test_cache / "names.txt").read_bytes() == GOOD
    assert [p.name for p in script.test_cache.iterdir()] == ["names.txt"]  # no partial left


def test_good_cache_is_used_without_downloading(script, monkeypatch):
    script.test_cache.mkdir()
    (script.test_cache / "names.txt").write_bytes(GOOD)

    def no_download(*args, **kwargs):
        raise AssertionError("a valid cached file must not be downloaded again")

    monkeypatch.setattr(script.urllib.request, "urlopen", no_download)
    assert script.ensure_dataset() == str(script.test_cache / "names.txt")


def test_cache_with_wrong_checksum_is_fetched_again(script):
    script.test_cache.mkdir()
    (script.test_cache / "names.txt").write_bytes(b"truncated")
    script.ensure_dataset()
    assert (script.test_cache / "names.txt").read_bytes() == GOOD


def test_corrupted_download_never_becomes_the_cache(script, capsys):
    script.test_source.write_bytes(b"not the real file")
    with pytest.raises(SystemExit) as exit_info:
        script.ensure_dataset()
    assert "SHA-256" in str(exit_info.value.code)
    assert list(script.test_cache.iterdir()) == []


def test_no_network_gives_one_clear_message(script, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(script.urllib.request, "urlopen", offline)
    with pytest.raises(SystemExit) as exit_info:
        script.ensure_dataset()
    message = str(exit_info.value.code)  # sys.exit(str) prints it and exits with status 1
    assert script.DATA_URL in message
    assert str(script.test_cache / "names.txt") in message
    assert list(script.test_cache.iterdir()) == []


def test_wrong_cached_file_offline_is_named_with_both_digests_and_left_alone(script, monkeypatch):
    # A user who saved their own copy where the message said must learn what is wrong with it,
    # not be told to save it where it already is.
    script.test_cache.mkdir()
    own_copy = b"emma\nolivia\n"
    (script.test_cache / "names.txt").write_bytes(own_copy)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(script.urllib.request, "urlopen", offline)
    with pytest.raises(SystemExit) as exit_info:
        script.ensure_dataset()
    message = str(exit_info.value.code)
    assert str(script.test_cache / "names.txt") in message
    assert "does not match the expected SHA-256" in message
    assert GOOD_SHA in message
    assert hashlib.sha256(own_copy).hexdigest() in message
    assert "save it as" not in message
    assert (script.test_cache / "names.txt").read_bytes() == own_copy
    assert [p.name for p in script.test_cache.iterdir()] == ["names.txt"]


def test_default_cache_is_shared_and_not_the_working_directory(script, monkeypatch, tmp_path):
    monkeypatch.delenv("NO_MAGIC_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert script.data_dir() == str(tmp_path / "xdg" / "no-magic")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert script.data_dir() == str(tmp_path / "home" / ".cache" / "no-magic")


@pytest.mark.parametrize("spec", DATA_SCRIPTS, ids=lambda s: s.name)
def test_offline_user_sees_a_message_not_a_traceback(spec, tmp_path):
    # The user's path end to end: main() with an empty cache and no network.
    program = textwrap.dedent(f"""
        import sys, urllib.error, urllib.request
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from support import load_script
        def offline(*args, **kwargs):
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        urllib.request.urlopen = offline
        load_script({spec.path!r}).main()
    """)
    env = {"NO_MAGIC_DATA_DIR": str(tmp_path / "empty-cache"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "could not get names.txt" in proc.stderr
    assert "Download https://" in proc.stderr
