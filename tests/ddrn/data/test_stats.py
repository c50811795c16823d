import logging
from pathlib import Path

from ddrn.data import check_known_counts, load_dataset, stats_table


def test_table_and_known_count_warning(market_tree: Path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        ds = load_dataset("market1501", market_tree)
    table = stats_table(ds)
    assert "train" in table and "gallery" in table
    assert table.splitlines()[3].split() == ["train", "2", "3", "3"]
    # The folder claims to be the real Market-1501, whose counts it does not have.
    problems = check_known_counts(ds)
    assert len(problems) == 3 and "751" in problems[0]
    assert any("incomplete copy" in r.message for r in caplog.records)


def test_no_check_for_other_folders(duke_tree: Path) -> None:
    assert check_known_counts(load_dataset("dukemtmc", duke_tree)) == []
