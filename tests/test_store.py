from dataclasses import dataclass

import pytest
import torch

from psputil import store
from psputil.data import DataConfig
from psputil.train import TrainConfig


@dataclass(frozen=True)
class Stage:
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    seed: int = 0


def test_keys_are_pinned():
    # Regression: these keys name folders on disk; changing them orphans every stored run.
    assert store.key(Stage()) == "4895272086844b8b"
    assert store.key(Stage(seed=3, train=TrainConfig(lr=0.05))) == "34ebbcc3af4935ef"


def test_only_non_default_fields_enter_the_key():
    assert store.describe(Stage(seed=3)) == {"type": "Stage", "fields": {"seed": 3}}
    assert store.key(Stage(seed=0)) == store.key(Stage())
    assert store.key(Stage(seed=1)) != store.key(Stage())
    nested = store.describe(Stage(data=DataConfig(train_size=100)))
    assert nested["fields"]["data"] == {"type": "DataConfig", "fields": {"train_size": 100}}


def test_finished_stage_is_loaded_not_recomputed(tmp_path):
    runs = store.RunStore(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"weights": torch.arange(3.0), "error": 1.5}

    first = runs.cached("train", Stage(), "result", compute)
    second = store.RunStore(tmp_path).cached("train", Stage(), "result", compute)
    assert len(calls) == 1
    assert torch.equal(second["weights"], first["weights"]) and second["error"] == 1.5


def test_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PSPUTIL_STORE", str(tmp_path / "env"))
    assert store.RunStore().root == tmp_path / "env"
    assert store.RunStore(tmp_path / "arg").root == tmp_path / "arg"


def test_crash_mid_write_leaves_the_previous_state_readable(tmp_path, monkeypatch):
    runs = store.RunStore(tmp_path)
    runs.save("train", Stage(), "result", {"version": 1})
    real_save = torch.save

    def crashing_save(obj, f):
        real_save(obj, f)
        f.truncate(10)  # half a file on disk ...
        raise KeyboardInterrupt  # ... when the run is killed

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        runs.save("train", Stage(), "result", {"version": 2})
    monkeypatch.undo()
    assert runs.load("train", Stage(), "result") == {"version": 1}
    leftovers = [p.name for p in runs.folder("train", Stage()).iterdir()]
    assert sorted(leftovers) == ["config.json", "result.pt"]


def test_corrupt_file_raises_an_error_naming_it(tmp_path):
    runs = store.RunStore(tmp_path)
    path = runs.save("train", Stage(), "result", {"ok": True})
    path.write_bytes(b"not a torch file")
    with pytest.raises(store.StoreError, match=str(path)):
        runs.load("train", Stage(), "result")
    with pytest.raises(store.StoreError):
        runs.cached("train", Stage(), "result", lambda: {"never": "recomputed over"})


def test_mismatched_config_raises(tmp_path):
    runs = store.RunStore(tmp_path)
    folder = runs.folder("train", Stage(seed=1))
    (folder / "config.json").write_text('{"type": "Stage", "fields": {"seed": 2}}')
    with pytest.raises(store.StoreError, match="config.json"):
        runs.load("train", Stage(seed=1), "result")


def test_checkpoints_load_with_weights_only(tmp_path):
    runs = store.RunStore(tmp_path)
    model = torch.nn.Linear(3, 2)
    runs.save("train", Stage(), "model", model.state_dict())
    loaded = runs.load("train", Stage(), "model")
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_undescribable_values_are_rejected():
    with pytest.raises(TypeError, match="dataclasses"):
        store.key(object())
