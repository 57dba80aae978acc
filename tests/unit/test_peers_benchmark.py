"""``benchmarks.peers`` end to end at a tiny size: ours and the raw aiosqlite driver on
SQLite, each in its own worker process (this interpreter, no peer virtualenvs), and the
checks every figure rests on."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.peer_systems.data import DataSet  # noqa: E402
from benchmarks.peer_systems.worker import PHASES, Params  # noqa: E402
from benchmarks.peers import Figures, Servers, System, markdown, run, tables  # noqa: E402

TINY = Params(users=1, store_cap_s=30.0, reads=40, read_cap_s=30.0, searches=40, search_cap_s=30.0)


def test_data_set_is_the_same_every_time_and_words_match_whole() -> None:
    a, b = DataSet(2), DataSet(2)
    assert a.fingerprint() == b.fingerprint()
    assert len(a.messages) == 2000 and len(a.conversations) == 20
    # every word has one length, so a substring hit is a whole-word hit
    assert {len(w) for w in a.words} == {5}
    word = a.words[0]
    assert a.holding(word) == sum(word in m.content.split(" ") for m in a.messages)
    # each writer's share keeps its conversations in order, and the shares cover everything
    shares = list(a.writer_shares(32))
    assert sorted(m.index for s in shares for m in s) == [m.index for m in a.messages]
    for share in shares:
        turns: dict[str, int] = {}
        for m in share:
            assert m.turn == turns.get(m.conversation, -1) + 1
            turns[m.conversation] = m.turn


def test_ours_and_raw_sqlite_pass_their_checks(tmp_path: Path) -> None:
    systems = [
        System("ours sqlite", "sqlite", "ours", "ours:OursSQLite", None),
        System("raw aiosqlite", "sqlite", "raw", "raw:RawAiosqlite", None),
    ]
    result = run(systems, TINY, Servers(data_dir=tmp_path), 1, lambda _msg: None)

    for name, entry in result["systems"].items():
        assert "error" not in entry, (name, entry.get("error"))
        runs = entry["runs"]
        assert set(runs) == set(PHASES)
        for phase in ("store_one", "store_concurrent"):
            (store,) = runs[phase]
            assert store["errors"] == 0 and store["timed"] == 1000, (name, store)
            back = store["read_back"]
            assert back["conversations_exact"] == 10 and back["conversations_wrong"] == 0
            assert back["count"] == back["expected"] == 1000
        (read,) = runs["read_last"]
        assert read["verdicts"] == {"exact": 40}, (name, read)
        (search,) = runs["search"]
        assert search["verdicts"] == {"ok": 40} and search["scope"] == "user", (name, search)
        figures = Figures.of(entry)
        assert figures.store_ok and figures.read_ok and figures.search_ok
        assert figures.store_one and figures.read_p50 and figures.search_p50

    (sqlite,) = tables(result)
    assert [row[0] for row in sqlite.rows] == ["ours sqlite", "raw aiosqlite"]
    assert [row[0] for row in sqlite.ratios] == ["ours ÷ raw driver"]
    assert all(cell.endswith("x") for cell in sqlite.ratios[0][1:])
    assert "| **ours ÷ raw driver** |" in markdown(result)
