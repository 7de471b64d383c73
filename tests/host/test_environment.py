"""Which commit a cell says it measured."""

from llmbench.host import environment


def test_checkout_head_is_recorded_with_its_dirty_flag(monkeypatch):
    head = environment.git_head(environment.REPO_ROOT)
    monkeypatch.delenv("LLMBENCH_GIT_COMMIT", raising=False)
    recorded = environment.git_commit()
    assert recorded["commit"] == head and recorded["dirty"] in (True, False)


def test_declared_commit_wins_over_a_stale_checkout(monkeypatch):
    monkeypatch.setattr(environment, "git_head", lambda repo: "0" * 40)
    monkeypatch.setenv("LLMBENCH_GIT_COMMIT", "f" * 40)
    assert environment.git_commit() == {
        "commit": "f" * 40,
        "dirty": None,
        "source": "LLMBENCH_GIT_COMMIT",
        "checkout_head": "0" * 40,
    }


def test_declared_commit_is_used_outside_a_checkout(monkeypatch):
    monkeypatch.setattr(environment, "git_head", lambda repo: None)
    monkeypatch.setenv("LLMBENCH_GIT_COMMIT", "f" * 40)
    assert environment.git_commit() == {"commit": "f" * 40, "dirty": None}
