"""The run store: keys that name exactly what computed a result, and files that cannot be served to the wrong run."""

import dataclasses
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from psputil import store
from psputil.data import DataConfig
from psputil.experiments import analysis, minima, setups, units
from psputil.transfer import study
from psputil.transfer import units as transfer_units
from psputil.transfer.probe import PROBE
from psputil.train import TrainConfig

PINNED = Path(__file__).parent / "data" / "run_keys.json"


@dataclass(frozen=True)
class Stage:
    VERSION: ClassVar[int] = 1
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    seed: int = 0


def stage_configs():
    """One config of every stage of every setup and profile: {profile/setup/stage: config}."""
    out = {}
    for profile in setups.PROFILES:
        for name in setups.SETUP_NAMES:
            s = setups.setup(name, profile)
            rate = float(s.milestones[0])
            pair = analysis.pair(s, rate, 0)
            configs = {
                "dense": s.dense_run(0), "lobster": s.lobster_run(0), "oneshot": s.oneshot_run(0, rate),
                "control": s.control_run(0, rate, "lottery", 0), "pair": pair, "plane": analysis.PlaneConfig(pair),
                "facts": minima.FactsConfig(pair),
            }
            target = study.DEFAULT_TARGETS.get(s.data.name)
            if target is not None:
                source = transfer_units.Source("G", s.model, s.data, pair)
                configs["transfer"] = transfer_units.TransferRun(source, study.target_config(target, profile), PROBE, 0,
                                                                 1000, 4096)
            out.update({f"{profile}/{name}/{stage}": c for stage, c in configs.items()})
    return out


def current_keys():
    return {name: store.key(config) for name, config in stage_configs().items()}


def test_every_stage_key_of_every_profile_is_pinned():
    # A failure here means a stage would read results computed by other code or other
    # hyperparameters. Changed behaviour: bump that stage's VERSION. Changed a default or a
    # profile on purpose: regenerate with `python tests/test_store.py` and say why in the commit.
    pinned = json.loads(PINNED.read_text())
    current = current_keys()
    changed = {k: (pinned.get(k), v) for k, v in current.items() if pinned.get(k) != v}
    assert not changed, f"run keys changed (pinned, now): {changed}"
    assert set(pinned) == set(current)


def test_keys_include_defaults_and_versions():
    described = store.describe(Stage())
    assert described["version"] == 1
    assert set(described["fields"]["train"]["fields"]) == {f.name for f in dataclasses.fields(TrainConfig)}
    # A changed default changes the key: the value is written out even when it equals the default.
    assert store.key(Stage(train=TrainConfig(weight_decay=0.05))) != store.key(Stage())


def test_a_version_bump_rekeys_the_stage_and_everything_built_on_it(monkeypatch):
    s = setups.setup("lenet300-mnist", "smoke")
    before = {name: store.key(c) for name, c in {
        "dense": s.dense_run(0), "lobster": s.lobster_run(0), "control": s.control_run(0, 30, "lottery", 0),
        "oneshot": s.oneshot_run(0, 30)}.items()}
    monkeypatch.setattr(units.LobsterRun, "VERSION", units.LobsterRun.VERSION + 1)
    after = {name: store.key(c) for name, c in {
        "dense": s.dense_run(0), "lobster": s.lobster_run(0), "control": s.control_run(0, 30, "lottery", 0),
        "oneshot": s.oneshot_run(0, 30)}.items()}
    assert after["dense"] == before["dense"] and after["oneshot"] == before["oneshot"]
    assert after["lobster"] != before["lobster"] and after["control"] != before["control"]


def test_a_dense_key_depends_only_on_what_dense_training_uses():
    s = setups.setup("lenet300-mnist", "quick")
    edited = dataclasses.replace(s, milestones=(10.0,), control_seeds=7, lobster=dataclasses.replace(s.lobster, pwe=9))
    assert store.key(edited.dense_run(0)) == store.key(s.dense_run(0))
    assert store.key(edited.lobster_run(0)) != store.key(s.lobster_run(0))


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


def test_another_runs_file_is_refused(tmp_path):
    runs = store.RunStore(tmp_path)
    other = runs.save("control", Stage(seed=1), "result", {"test_error": 74.0})
    mine = runs.save("control", Stage(seed=2), "result", {"test_error": 17.0})
    mine.write_bytes(other.read_bytes())  # a valid result copied from another run
    with pytest.raises(store.StoreError, match=f"{mine}.*another run.*key"):
        runs.load("control", Stage(seed=2), "result")


def test_a_flipped_byte_in_the_tensor_data_is_refused(tmp_path):
    runs = store.RunStore(tmp_path)
    path = runs.save("train", Stage(), "state", {"w": torch.arange(1000.0)})
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # inside the tensor payload
    path.write_bytes(bytes(raw))
    with pytest.raises(store.StoreError, match=f"{path} is damaged"):
        runs.load("train", Stage(), "state")
    with pytest.raises(store.StoreError):
        runs.cached("train", Stage(), "state", lambda: {"never": "recomputed over"})


def test_a_missing_or_foreign_config_json_is_refused(tmp_path):
    runs = store.RunStore(tmp_path)
    runs.save("train", Stage(seed=1), "result", {"ok": True})
    config_file = runs.folder("train", Stage(seed=1)) / "config.json"
    config_file.unlink()
    with pytest.raises(store.StoreError, match="config.json is missing"):
        runs.load("train", Stage(seed=1), "result")
    config_file.write_text(json.dumps(store.describe(Stage(seed=2))))
    with pytest.raises(store.StoreError, match="other hyperparameters"):
        runs.load("train", Stage(seed=1), "result")


@pytest.mark.parametrize("stage, name", [("../escape", "result"), ("train", "../../x"), ("/abs", "result"),
                                         ("train", "a/b"), ("train", ".hidden"), ("", "result")])
def test_stage_and_object_names_cannot_leave_the_root(tmp_path, stage, name):
    runs = store.RunStore(tmp_path / "root")
    with pytest.raises(ValueError, match="invalid"):
        runs.save(stage, Stage(), name, {"x": 1})
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "escape").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_store_is_refused_before_any_compute(tmp_path):
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(stat.S_IREAD | stat.S_IEXEC)
    calls = []
    with pytest.raises(store.StoreError, match="not writable"):
        store.RunStore(root).cached("train", Stage(), "result", lambda: calls.append(1))
    assert calls == []


def test_a_read_only_store_is_refused_before_any_compute_even_as_root(tmp_path, monkeypatch):
    def refuse(self, data):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_bytes", refuse)
    calls = []
    with pytest.raises(store.StoreError, match="is not writable"):
        store.RunStore(tmp_path).cached("train", Stage(), "result", lambda: calls.append(1))
    assert calls == []


def test_a_full_disk_names_the_path_and_the_cause(tmp_path, monkeypatch):
    runs = store.RunStore(tmp_path)
    runs.save("train", Stage(), "result", {"version": 1})
    real_fsync = os.fsync

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(store.StoreError, match=r"result\.pt: the disk is full"):
        runs.save("train", Stage(), "result", {"version": 2})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert runs.load("train", Stage(), "result") == {"version": 1}  # the old file is intact
    assert sorted(p.name for p in runs.folder("train", Stage()).iterdir()) == ["config.json", "result.pt"]


def test_a_writer_killed_mid_write_leaves_nothing_behind_for_long(tmp_path):
    runs = store.RunStore(tmp_path)
    runs.save("train", Stage(), "result", {"version": 1})
    folder = runs.folder("train", Stage())
    script = (f"import os, torch; from psputil import store\n"
              f"f = open({str(folder)!r} + '/.result.pt.' + __import__('socket').gethostname() + '.' + str(os.getpid()) + '.3f9a01bc.tmp', 'wb')\n"
              "f.write(b'half a file'); f.flush(); os._exit(9)\n")
    subprocess.run([sys.executable, "-c", script], check=False)
    assert any(p.name.endswith(".tmp") for p in folder.iterdir())
    runs.save("train", Stage(), "other", {"x": 1})  # the next write to the folder cleans up
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "other.pt", "result.pt"]
    assert runs.load("train", Stage(), "result") == {"version": 1}


def test_checkpoints_load_with_weights_only(tmp_path):
    runs = store.RunStore(tmp_path)
    model = torch.nn.Linear(3, 2)
    runs.save("train", Stage(), "model", model.state_dict())
    loaded = runs.load("train", Stage(), "model")
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_undescribable_values_are_rejected():
    with pytest.raises(TypeError, match="dataclasses"):
        store.key(object())


if __name__ == "__main__":  # regenerate the pinned keys after an intended change
    PINNED.write_text(json.dumps(current_keys(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(current_keys())} keys to {PINNED}")
