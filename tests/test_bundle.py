"""Bundles: a finished tiny benchmark exported, imported, merged from two machines' halves, in conflict, and
tampered with (each tampering refused in one line, exit 2, the store unchanged)."""
from __future__ import annotations

import json
import shutil
import sqlite3
import zipfile
from pathlib import Path

import pytest
from conftest import bocb_main
from test_hostile import fingerprint

from bocb.store import Store

pytestmark = pytest.mark.xdist_group("finished-tiny")  # one worker trains conftest.finished_tiny, once


@pytest.fixture
def finished_store(finished_tiny: Path) -> Path:
    """A real finished benchmark (conftest.finished_tiny: 2 tiny backbones x 2 optimizers on digits, 2 learning
    rates each), read only."""
    return finished_tiny / "bocb.db"


def _results(store: Path, capsys) -> str:
    code, out, err = bocb_main("results", str(store), "--format", "csv", "--value", "test_top1", capsys=capsys)
    assert code == 0, err
    return out


def _export(store: Path, bundle: Path, capsys) -> None:
    code, out, err = bocb_main("export", str(store), "-o", str(bundle), capsys=capsys)
    assert code == 0, err
    assert "finished trials" in out


def _import(bundle: Path, store: Path, capsys) -> tuple[int, str, str]:
    return bocb_main("import", str(bundle), "--store", str(store), capsys=capsys)


def _stored(store: Path, table: str) -> list[tuple]:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        order = {"benchmarks": "id", "plan": "trial_key", "epochs": "trial_key, epoch"}.get(table, "key")
        order = "trial_key" if table == "layer_tables" else order
        columns = "*" if table != "trials" else "key, state, val_top1, test_top1, test_top5, train_loss, config_json"
        return db.execute(f"SELECT {columns} FROM {table} ORDER BY {order}").fetchall()


def test_export_then_import_gives_identical_results_and_a_second_import_adds_nothing(
        finished_store: Path, tmp_path: Path, capsys) -> None:
    bundle = tmp_path / "run.zip"
    _export(finished_store, bundle, capsys)
    copy = tmp_path / "copy.db"
    code, out, err = _import(bundle, copy, capsys)
    assert code == 0, err
    finished = len(Store(finished_store).trials_frame())
    assert f"{finished} trials added, 0 already there, 0 in conflict" in out
    assert _results(copy, capsys) == _results(finished_store, capsys)
    for table in ("trials", "epochs", "layer_tables"):
        assert _stored(copy, table) == _stored(finished_store, table)
    before = fingerprint(copy)
    code, out, _ = _import(bundle, copy, capsys)
    assert code == 0 and f"0 trials added, {finished} already there" in out
    assert fingerprint(copy) == before


def _with_pending(source: Path, target: Path, keep_every_other: int) -> Path:
    """A copy of the store as a machine that finished only every other trial (the rest pending, with a
    partial epoch left behind by an interrupted run) would hold it."""
    shutil.copy(source, target)
    with sqlite3.connect(target) as db:
        keys = [k for (k,) in db.execute("SELECT key FROM trials ORDER BY key")]
        undone = keys[keep_every_other::2]
        db.executemany("UPDATE trials SET state='pending', val_top1=NULL, test_top1=NULL WHERE key=?",
                       [(k,) for k in undone])
        db.executemany("DELETE FROM epochs WHERE trial_key=? AND epoch > 1", [(k,) for k in undone])
        db.executemany("DELETE FROM layer_tables WHERE trial_key=?", [(k,) for k in undone])
    return target


def test_two_machines_halves_merge_into_one_full_matrix(finished_store: Path, tmp_path: Path, capsys) -> None:
    halves = [_with_pending(finished_store, tmp_path / f"machine{i}.db", i) for i in (0, 1)]
    merged = tmp_path / "merged.db"
    for i, half in enumerate(halves):
        _export(half, tmp_path / f"half{i}.zip", capsys)
        code, _, err = _import(tmp_path / f"half{i}.zip", merged, capsys)
        assert code == 0, err
    assert _results(merged, capsys) == _results(finished_store, capsys)
    assert _stored(merged, "epochs") == _stored(finished_store, "epochs")
    code, out, err = bocb_main("report", str(merged), "-o", str(tmp_path / "report"), "--n-boot", "20",
                               capsys=capsys)
    assert code == 0, err
    assert "resnet50" in (tmp_path / "report" / "index.html").read_text()  # one report of both machines
    # a half-finished store that imports the other half's bundle completes, its partial epochs replaced
    code, out, err = _import(tmp_path / "half1.zip", halves[0], capsys)
    assert code == 0, err
    assert _results(halves[0], capsys) == _results(finished_store, capsys)
    assert _stored(halves[0], "epochs") == _stored(finished_store, "epochs")


def test_a_conflicting_bundle_is_reported_and_nothing_is_overwritten(finished_store: Path, tmp_path: Path,
                                                                      capsys) -> None:
    other = tmp_path / "other.db"
    shutil.copy(finished_store, other)
    with sqlite3.connect(other) as db:
        (key,) = db.execute("SELECT key FROM trials WHERE state='done' ORDER BY key LIMIT 1").fetchone()
        db.execute("UPDATE trials SET test_top1 = test_top1 + 1.5 WHERE key=?", (key,))
    _export(other, tmp_path / "other.zip", capsys)
    target = tmp_path / "target.db"
    shutil.copy(finished_store, target)
    before = fingerprint(target)
    code, out, err = _import(tmp_path / "other.zip", target, capsys)
    assert code == 4
    assert "1 in conflict" in out and key[:10] in err
    assert fingerprint(target) == before


def _rewrite(bundle: Path, target: Path, table: str, change, fix_digest: bool = True) -> Path:
    """A copy of ``bundle`` whose ``table`` rows went through ``change`` (the manifest's digest updated,
    as a forger would, unless ``fix_digest`` is False)."""
    import hashlib

    with zipfile.ZipFile(bundle) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    rows = [json.loads(line) for line in files[f"{table}.jsonl"].splitlines()]
    data = change(rows)
    if isinstance(data, list):
        data = "".join(json.dumps(r) + "\n" for r in data).encode()
    files[f"{table}.jsonl"] = data
    if fix_digest:
        manifest = json.loads(files["manifest.json"])
        manifest["files"][f"{table}.jsonl"]["sha256"] = hashlib.sha256(data).hexdigest()
        files["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return target


def _first(change):
    def apply(rows):
        rows[0] = change(dict(rows[0]))
        return rows
    return apply


def _forged_config(row):
    config = json.loads(row["config_json"])
    config["lr"] = config["lr"] * 10
    return {**row, "config_json": json.dumps(config, sort_keys=True)}


def _other_spec(row):
    spec = json.loads(row["spec_json"])
    return {**row, "spec_json": json.dumps({**spec, "epochs": spec["epochs"] + 1})}


TAMPERED = {
    "a byte changed, digest left": ("trials", lambda rows: b"x" + b"".join(json.dumps(r).encode() + b"\n"
                                                                       for r in rows), False,
                                    "does not match the SHA-256 in its manifest"),
    "a key that is not its configuration's": ("trials", _first(_forged_config), True,
                                              "does not match its configuration"),
    "a flat column that contradicts the configuration": ("trials", _first(lambda r: {**r, "backbone": "vit"}),
                                                         True, "backbone = 'vit' contradicts its configuration"),
    "a number that is text": ("trials", _first(lambda r: {**r, "test_top1": "99"}), True,
                              "test_top1 = '99' is not a valid FLOAT value"),
    "an unknown field": ("epochs", _first(lambda r: {**r, "bonus": 1}), True, "fields ['bonus',"),
    "an unfinished trial": ("trials", _first(lambda r: {**r, "state": "running"}), True,
                            "a bundle holds finished trials only"),
    "an epoch of a trial it does not hold": ("epochs", _first(lambda r: {**r, "trial_key": "f" * 20}), True,
                                             "epochs names ffffffffffffffffffff, which the bundle does not hold"),
    "a spec that is not the benchmark's": ("benchmarks", _first(_other_spec), True, "does not match its spec"),
    "not JSON": ("plan", lambda rows: b"{not json\n", True, "plan.jsonl line 1 is not JSON"),
    "a layer table that is not JSON": ("layer_tables", _first(lambda r: {**r, "table_json": "{oops"}), True,
                                       "layer_tables.jsonl line 1: table_json is not JSON"),
    "a provenance that is not JSON": ("trials", _first(lambda r: {**r, "provenance_json": "oops"}), True,
                                      "trials.jsonl line 1: provenance_json is not JSON"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_bundle_is_refused_in_one_line_and_the_store_is_unchanged(
        finished_store: Path, tmp_path: Path, capsys, case: str) -> None:
    table, change, fix_digest, message = TAMPERED[case]
    bundle = tmp_path / "good.zip"
    _export(finished_store, bundle, capsys)
    bad = _rewrite(bundle, tmp_path / "bad.zip", table, change, fix_digest)
    target = tmp_path / "target.db"
    _import(tmp_path / "good.zip", target, capsys)  # the store holds the good bundle
    with sqlite3.connect(target) as db:
        db.execute("UPDATE trials SET state='pending' WHERE key=(SELECT MIN(key) FROM trials)")  # room to write
    before = fingerprint(target)
    code, out, err = _import(bad, target, capsys)
    assert code == 2, (out, err)
    assert err.startswith("error: bundle:") and err.count("\n") == 1 and message in err, err
    assert fingerprint(target) == before


def test_not_a_bundle_extra_members_and_a_newer_format_are_refused(finished_store: Path, tmp_path: Path,
                                                                      capsys) -> None:
    (tmp_path / "text.zip").write_text("hello")
    bundle = tmp_path / "good.zip"
    _export(finished_store, bundle, capsys)
    extra = tmp_path / "extra.zip"
    shutil.copy(bundle, extra)
    with zipfile.ZipFile(extra, "a") as archive:
        archive.writestr("payload.pkl", b"\x80\x04")
    newer = _rewrite(bundle, tmp_path / "newer.zip", "plan", lambda rows: rows)
    with zipfile.ZipFile(newer) as archive:
        files = {n: archive.read(n) for n in archive.namelist()}
    files["manifest.json"] = json.dumps({**json.loads(files["manifest.json"]), "version": 99}).encode()
    with zipfile.ZipFile(newer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    for path, message in ((tmp_path / "text.zip", "is not a readable bocb bundle"),
                          (extra, "payload.pkl"), (newer, "format version 99")):
        code, _, err = _import(path, tmp_path / "target.db", capsys)
        assert code == 2 and message in err and err.count("\n") == 1, err
    code, _, err = bocb_main("export", str(finished_store), "-o", str(bundle), capsys=capsys)
    assert code == 2 and "exists" in err


def test_a_bundle_merges_into_sqlite_and_postgresql_alike(finished_store: Path, store_url: str, tmp_path: Path,
                                                          capsys) -> None:
    code, _, err = bocb_main("run", str(finished_store.parent / "spec.yaml"), "--plan-only", "--store", store_url,
                             "--out", str(tmp_path), capsys=capsys)
    assert code == 0, err  # the store to merge into holds the benchmark's trials, pending
    half = _with_pending(finished_store, tmp_path / "half.db", 0)
    _export(finished_store, tmp_path / "all.zip", capsys)
    _export(half, tmp_path / "half.zip", capsys)
    for bundle in ("half.zip", "all.zip", "all.zip"):
        code, _, err = _import(tmp_path / bundle, store_url, capsys)  # type: ignore[arg-type]
        assert code == 0, err
    assert _results(store_url, capsys) == _results(finished_store, capsys)  # type: ignore[arg-type]


def test_kept_weights_travel_with_weights_and_a_tampered_model_is_refused(finished_store: Path, tmp_path: Path,
                                                                          capsys) -> None:
    bundle = tmp_path / "with-weights.zip"
    code, out, err = bocb_main("export", str(finished_store), "-o", str(bundle), "--weights", capsys=capsys)
    assert code == 0, err
    source = sorted((finished_store.parent / "artifacts" / "weights").glob("*"))
    assert f"{len(source) // 2} kept models" in out and len(source) >= 8  # the 4 chosen cells, weights + JSON
    target = tmp_path / "machine-b" / "bocb.db"
    code, _, err = _import(bundle, target, capsys)
    assert code == 0, err
    arrived = sorted((target.parent / "artifacts" / "weights").glob("*"))
    assert [p.name for p in arrived] == [p.name for p in source]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(arrived, source))
    code, out, _ = bocb_main("models", str(target), capsys=capsys)
    assert code == 0 and f"{len(source) // 2} kept model(s)" in out

    with zipfile.ZipFile(bundle) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    name = next(n for n in files if n.endswith(".safetensors"))
    files[name] = files[name][:-1] + bytes([files[name][-1] ^ 0xFF])  # one flipped byte, manifest untouched
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(tampered, "w") as archive:
        for member, content in files.items():
            archive.writestr(member, content)
    fresh = tmp_path / "machine-c" / "bocb.db"
    code, _, err = _import(tampered, fresh, capsys)
    assert code == 2 and f"{name} does not match the SHA-256" in err and err.count("\n") == 1, err
    assert not list((fresh.parent / "artifacts" / "weights").glob("*"))  # nothing left behind
    assert Store(fresh).trials_frame().empty  # and nothing merged


def test_a_zip_bomb_a_refused_import_into_a_new_store_and_a_file_as_artifact_root(finished_store: Path,
                                                                                 tmp_path: Path, capsys) -> None:
    """A member declaring far more than it compresses from is refused before it is read; a refused import
    into a store path that did not exist leaves nothing there; --artifact-root naming a file is its own fault."""
    bundle = tmp_path / "good.zip"
    _export(finished_store, bundle, capsys)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in source.namelist():
            archive.writestr(name, b"\0" * (50 << 20) if name == "plan.jsonl" else source.read(name))
    assert bomb.stat().st_size < 1 << 20
    code, _, err = _import(bomb, tmp_path / "new.db", capsys)
    assert code == 2 and err.count("\n") == 1 and "plan.jsonl declares 52428800 bytes" in err and "zip bomb" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.zip", "good.zip"]  # no new.db, no -wal
    (tmp_path / "a-file").write_text("x")
    code, _, err = bocb_main("import", str(bundle), "--store", str(tmp_path / "new.db"), "--artifact-root",
                             str(tmp_path / "a-file"), capsys=capsys)
    assert code == 2 and err.startswith("error: --artifact-root:") and "is a file" in err, err
    assert not (tmp_path / "new.db").exists()
