"""The options of access, erasure and telemetry: what they accept, what they refuse."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bruno_memstore import open_memory
from bruno_memstore.backends.memory import InMemoryStorage
from bruno_memstore.erasure_log import ErasureLog, JsonlErasureLog, erasure_entry, erasure_log
from bruno_memstore.errors import InvalidArgumentError, MissingDependencyError
from bruno_memstore.telemetry import Telemetry, telemetry_wanted
from bruno_memstore.user_export import USER_EXPORT_FORMAT, is_user_package, package_lines


def test_erasure_log_option_forms(tmp_path: Path) -> None:
    assert erasure_log(None) is None
    assert isinstance(erasure_log(tmp_path / "a.jsonl"), JsonlErasureLog)
    assert isinstance(erasure_log(str(tmp_path / "a.jsonl")), JsonlErasureLog)
    assert type(erasure_log(print)) is ErasureLog
    given = JsonlErasureLog(tmp_path / "b.jsonl")
    assert erasure_log(given) is given
    for bad in (42, "  ", b"path"):
        with pytest.raises(InvalidArgumentError) as info:
            erasure_log(bad)
        assert info.value.argument == "erasure_log"
    with pytest.raises(InvalidArgumentError):
        InMemoryStorage(erasure_log=3.5)


def test_jsonl_log_appends_whole_lines(tmp_path: Path) -> None:
    log = JsonlErasureLog(tmp_path / "log.jsonl")
    first = erasure_entry("ümlaut-user", {"messages": 2}, backend="memory", store="")
    log.append(first)
    log.append(erasure_entry("other", {"messages": 0}, backend="memory", store=""))
    lines = (tmp_path / "log.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["user_id"] for line in lines] == ["ümlaut-user", "other"]
    assert json.loads(lines[0]) == first


def test_url_erasure_log_reaches_every_backend_kind(tmp_path: Path) -> None:
    log = tmp_path / "e.jsonl"
    memory = open_memory(f"memory://?erasure_log={log}")
    assert isinstance(memory.erasure_log, JsonlErasureLog) and memory.erasure_log.path == log
    # A keyword wins over the URL.
    assert open_memory(f"memory://?erasure_log={log}", erasure_log=None).erasure_log is None


def test_package_lines_refuses_what_is_not_a_package() -> None:
    assert not is_user_package({"format": "bruno-memstore", "version": 1})
    with pytest.raises(InvalidArgumentError):
        list(package_lines({"format": "something-else"}))
    with pytest.raises(InvalidArgumentError):
        list(package_lines({"format": USER_EXPORT_FORMAT, "version": 2, "records": []}))
    lines = list(
        package_lines({"format": USER_EXPORT_FORMAT, "version": 1, "user_id": "u", "records": []})
    )
    assert [json.loads(line) for line in lines] == [
        {"type": "header", "format": "bruno-memstore", "version": 1, "user_id": "u"}
    ]


def test_telemetry_wanted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRUNO_MEMSTORE_TELEMETRY", raising=False)
    assert telemetry_wanted(None) is False
    assert telemetry_wanted(True) is True and telemetry_wanted(Telemetry()) is True
    assert telemetry_wanted(False) is False
    monkeypatch.setenv("BRUNO_MEMSTORE_TELEMETRY", "on")
    assert telemetry_wanted(None) is True and telemetry_wanted(False) is False
    with pytest.raises(InvalidArgumentError):
        telemetry_wanted("yes")
    with pytest.raises(InvalidArgumentError):
        telemetry_wanted(True, trace_content="yes")


def test_telemetry_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "bruno_memstore.otel", raising=False)
    with pytest.raises(MissingDependencyError) as info:
        InMemoryStorage(telemetry=True)
    assert info.value.extra == "otel" and "bruno-memstore[otel]" in str(info.value)
    assert InMemoryStorage(telemetry=False) is not None  # off needs nothing
