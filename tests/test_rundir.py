"""The run folder's status, logs and snapshot records survive torn writes and resumes."""

import json

from genbench.storage.folder import (
    RunFolder,
    last_logged,
    put_snapshot,
    read_status,
    set_status,
    truncate_log,
)


def test_status_round_trip_and_unreadable_status(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert folder.status() == {} and not folder.is_done()
    folder.set_status("running", phase="sample")
    assert folder.status()["phase"] == "sample" and "time" in folder.status()
    set_status(folder.path, "done")
    assert folder.is_done() and "phase" not in read_status(folder.path)
    (folder.path / "status.json").write_text('{"status": "do')  # torn by a killed writer
    assert folder.status() == {}


def test_truncate_log_keeps_records_up_to_the_checkpoint(tmp_path):
    log = tmp_path / "train_log.jsonl"
    recs = [{"step": s, "kimg": s / 10, "loss": float(s)} for s in (2, 4, 6)]
    log.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"step": 8, "lo')
    truncate_log(log, 4)
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [2, 4]
    assert last_logged(log) == {"loss": 4.0}


def test_a_retaken_snapshot_replaces_the_later_records(tmp_path):
    path = tmp_path / "snapshots.jsonl"
    for step in (5, 10, 15):
        put_snapshot(path, {"step": step, "fid": 1.0})
    put_snapshot(path, {"step": 10, "fid": 2.0})  # a resume from step 5 takes 10 again
    assert [json.loads(x) for x in path.read_text().splitlines()] == [
        {"step": 5, "fid": 1.0},
        {"step": 10, "fid": 2.0},
    ]
