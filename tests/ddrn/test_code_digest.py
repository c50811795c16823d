"""The training-code digest in every fingerprint: an edit to training code retrains."""

from __future__ import annotations

from pathlib import Path

from ddrn.code_digest import digest_files, training_code_digest, training_code_files


def _tree(root: Path) -> Path:
    for rel in ("ddrn/config.py", "ddrn/atomic.py", "ddrn/errors.py", "ddrn/models/vit.py",
                "ddrn/losses/margin.py", "ddrn/data/sampler.py", "ddrn/engine/trainer.py",
                "ddrn/evaluation/rank.py", "pipeline/trial/experiment.py", "pipeline/report/build.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"# {rel}\n")
    return root / "ddrn"


def test_training_edits_change_the_digest_and_others_do_not(tmp_path: Path) -> None:
    package = _tree(tmp_path)
    before = digest_files(training_code_files(package), tmp_path)
    (tmp_path / "ddrn/evaluation/rank.py").write_text("# ranking changed\n")
    (tmp_path / "pipeline/report/build.py").write_text("# report changed\n")
    assert digest_files(training_code_files(package), tmp_path) == before
    for rel in ("ddrn/losses/margin.py", "pipeline/trial/experiment.py", "ddrn/config.py"):
        path = tmp_path / rel
        original = path.read_text()
        path.write_text(original + "x = 1\n")
        assert digest_files(training_code_files(package), tmp_path) != before, rel
        path.write_text(original)
    assert digest_files(training_code_files(package), tmp_path) == before


def test_a_new_training_module_changes_the_digest(tmp_path: Path) -> None:
    package = _tree(tmp_path)
    before = digest_files(training_code_files(package), tmp_path)
    (package / "models" / "new_head.py").write_text("")
    assert digest_files(training_code_files(package), tmp_path) != before


def test_this_checkout_digest_covers_the_real_training_code() -> None:
    names = {p.relative_to(Path(__file__).resolve().parents[2]).as_posix()
             for p in training_code_files()}
    assert {"ddrn/config.py", "ddrn/engine/trainer.py", "ddrn/models/embedding_space.py",
            "ddrn/losses/margin.py", "pipeline/trial/experiment.py"} <= names
    assert not any(n.startswith(("ddrn/evaluation/", "pipeline/report")) for n in names)
    assert len(training_code_digest()) == 16
