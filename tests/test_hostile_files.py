"""Hostile files (issue #30): bundles, kept weights, pickles and key prefixes made to hurt. Each is refused
in one line on stderr, exit code 2, no traceback, and nothing stored changes (a refused import into a new
store path leaves no store there). Everything is real: files written here, the CLI run in this process on a
copy of the shared finished benchmark (conftest.finished_tiny)."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import bocb_command, bocb_main, copy_store
from test_hostile import fingerprint

pytestmark = pytest.mark.xdist_group("finished-tiny")  # one worker trains conftest.finished_tiny, once

BOMB_BYTES = 3_900_000_000  # what the bomb's member inflates to (and declares): 3.9 GB of zeros


@pytest.fixture
def run(finished_tiny: Path, tmp_path: Path) -> Path:
    """A private copy of the finished tiny benchmark (store and kept weights), free to damage."""
    return copy_store(finished_tiny, tmp_path / "run")


@pytest.fixture
def bundle(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The finished benchmark exported with its kept weights, as `bocb export --weights` writes it."""
    path = tmp_path / "good.zip"
    code, _, err = bocb_main("export", str(run / "bocb.db"), "-o", str(path), "--weights", capsys=capsys)
    assert code == 0, err
    return path


def _refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the CLI; it must refuse in exactly one line on stderr, exit code 2, no traceback. Returns the line."""
    code, _, err = bocb_main(*args, capsys=capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.strip() and "Traceback" not in err, err
    return err.strip()


def _refused_import(capsys: pytest.CaptureFixture[str], bad: Path, run: Path, tmp_path: Path,
                    *options: str) -> str:
    """Import ``bad`` into a new store path and into the existing store: both refused, neither store there
    nor the existing one changed, and no kept weights left behind. Returns the first refusal's line."""
    fresh = tmp_path / "new" / "bocb.db"
    line = _refused(capsys, "import", str(bad), "--store", str(fresh), *options)
    assert not fresh.exists() and not fresh.parent.exists()  # no empty store, no artifacts folder either
    existing, weights = run / "bocb.db", sorted((run / "artifacts" / "weights").iterdir())
    before = fingerprint(existing)
    assert _refused(capsys, "import", str(bad), "--store", str(existing), *options) == line
    assert fingerprint(existing) == before
    assert sorted((run / "artifacts" / "weights").iterdir()) == weights  # no staged file left
    return line


def _members(bundle: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(bundle) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return path


def _resigned(files: dict[str, bytes], **changed: bytes) -> dict[str, bytes]:
    """``files`` with the members ``changed`` replaced and the manifest's digests and sizes updated to match,
    as a forger would."""
    files = {**files, **changed}
    manifest = json.loads(files["manifest.json"])
    for name, content in changed.items():
        manifest["files"][name] = {**manifest["files"].get(name, {}), "sha256": hashlib.sha256(content).hexdigest(),
                                   "bytes": len(content)}
    return {**files, "manifest.json": json.dumps(manifest).encode()}


# -- zip bombs and lying headers ------------------------------------------------------------------------

def _raw_zip(path: Path, members: dict[str, tuple[bytes, int, int]]) -> Path:
    """A zip written byte by byte: name -> (raw deflate stream, CRC-32, the uncompressed size it declares).
    zipfile cannot write a member whose stream was compressed elsewhere; a forger's tool can."""
    body, directory = bytearray(), bytearray()
    for name, (stream, crc, size) in members.items():
        encoded, offset = name.encode(), len(body)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(stream), size,
                            len(encoded), 0) + encoded + stream
        directory += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(stream), size,
                                 len(encoded), 0, 0, 0, 0, 0, offset) + encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory), len(body), 0)
    path.write_bytes(bytes(body + directory + end))
    return path


def _deflated(data: bytes) -> tuple[bytes, int, int]:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush(), zlib.crc32(data), len(data)


def _zeros_deflated(size: int) -> bytes:
    """A raw deflate stream of ``size`` zero bytes (a multiple of 64 MiB here), built from one compressed
    block repeated: after a full flush deflate forgets its history, so each block's output is the same."""
    block = bytes(64 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    return chunk * (size // len(block)) + packer.flush()


def test_a_zip_bomb_is_refused_by_its_declared_size_before_a_byte_is_inflated(
        bundle: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _members(bundle)
    size = BOMB_BYTES // (64 << 20) * (64 << 20)
    # The CRC is left 0: computing the real one costs seconds, and bocb must refuse before it reads far
    # enough to check it (an attacker would set it right).
    members = {name: _deflated(content) for name, content in files.items()}
    stream = _zeros_deflated(size)
    assert len(stream) < 5 << 20  # a few MB on disk, 3.9 GB inflated
    members["layer_tables.jsonl"] = (stream, 0, size)
    bomb = _raw_zip(tmp_path / "bomb.zip", members)
    line = _refused_import(capsys, bomb, run, tmp_path)
    assert line.startswith("error: bundle:") and f"layer_tables.jsonl declares {size} bytes" in line, line


def test_a_member_that_holds_more_than_its_header_declares_is_refused(
        bundle: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _members(bundle)
    members = {name: _deflated(content) for name, content in files.items()}
    stream, crc, size = members["epochs.jsonl"]
    members["epochs.jsonl"] = (stream, crc, 100)  # the header lies: 100 bytes, the stream inflates to more
    liar = _raw_zip(tmp_path / "liar.zip", members)
    line = _refused_import(capsys, liar, run, tmp_path)
    assert line.startswith("error: bundle:") and size > 100, line  # zipfile's CRC check or bocb's own bound


# -- re-signed records of the wrong type or shape -------------------------------------------------------

def _first_row(table: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, bytes]],
                                                                                         dict[str, bytes]]:
    def forge(files: dict[str, bytes]) -> dict[str, bytes]:
        rows = [json.loads(line) for line in files[f"{table}.jsonl"].splitlines()]
        rows[0] = change(rows[0])
        return _resigned(files, **{f"{table}.jsonl": "".join(json.dumps(r) + "\n" for r in rows).encode()})
    return forge


def _twice(table: str) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    def forge(files: dict[str, bytes]) -> dict[str, bytes]:
        lines = files[f"{table}.jsonl"].splitlines(keepends=True)
        return _resigned(files, **{f"{table}.jsonl": b"".join([*lines, lines[0]])})
    return forge


FORGED = {
    "a layer table that is not JSON": (_first_row("layer_tables", lambda r: {**r, "table_json": "{not json"}),
                                       "table_json is not JSON"),
    "a layer table that is JSON but no table": (_first_row("layer_tables", lambda r: {**r, "table_json": "[1]"}),
                                                "table_json is JSON but not a layer table"),
    "provenance that is not JSON": (_first_row("trials", lambda r: {**r, "provenance_json": "[1, 2"}),
                                    "provenance_json is not JSON"),
    "provenance that is a list": (_first_row("trials", lambda r: {**r, "provenance_json": "[]"}),
                                  "provenance_json is JSON but not a JSON object"),
    "hyper-parameters that are not JSON": (_first_row("trials", lambda r: {**r, "hparams_json": "nope"}),
                                           "hparams_json is not JSON"),
    "an epoch number that is text": (_first_row("epochs", lambda r: {**r, "epoch": "1"}),
                                     "epoch = '1' is not a valid INTEGER value"),
    "an integer no store holds": (_first_row("epochs", lambda r: {**r, "epoch": 10 ** 30}),
                                  "is not a valid INTEGER value"),
    "a number that is a boolean": (_first_row("trials", lambda r: {**r, "val_top1": True}),
                                   "val_top1 = 'True' is not a valid FLOAT value"),
    "a text with a NUL byte": (_first_row("trials", lambda r: {**r, "error": "a\x00b"}),
                               "error = 'a\\x00b' is not a valid TEXT value"),
    "a trial twice": (_twice("trials"), "appears twice"),
}


@pytest.mark.parametrize("case", list(FORGED))
def test_a_resigned_bundle_with_a_record_of_the_wrong_type_is_refused_before_anything_is_merged(
        bundle: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    forge, message = FORGED[case]
    bad = _write(tmp_path / "forged.zip", forge(_members(bundle)))
    line = _refused_import(capsys, bad, run, tmp_path)
    assert line.startswith("error: bundle:") and message in line, line
    # nothing was imported, so nothing can crash a report of it later: there is no store to report on
    assert "no such store file" in _refused(capsys, "report", str(tmp_path / "new" / "bocb.db"),
                                            "--out", str(tmp_path / "report"))


def test_a_bundle_whose_weights_are_random_bytes_under_a_resigned_digest_is_refused(
        bundle: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _members(bundle)
    name = sorted(n for n in files if n.endswith(".safetensors"))[0]
    noise = os.urandom(len(files[name]))
    description = json.loads(files[name.replace(".safetensors", ".json")])
    description["sha256"] = hashlib.sha256(noise).hexdigest()  # the JSON re-signed too: only the format is left
    bad = _write(tmp_path / "noise.zip", _resigned(files, **{name: noise, name.replace(".safetensors", ".json"):
                                                              json.dumps(description).encode()}))
    line = _refused_import(capsys, bad, run, tmp_path)
    assert line.startswith("error: bundle:") and f"{name} not a safetensors file" in line, line


def test_an_artifact_root_that_is_a_file_is_refused_as_the_artifact_roots_problem(
        bundle: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = _refused_import(capsys, bundle, run, tmp_path, "--artifact-root", str(blocker))
    assert line.startswith("error: --artifact-root:") and "bundle" not in line.removeprefix("error: "), line
    assert blocker.read_text() == "not a folder"


# -- kept weights -----------------------------------------------------------------------------------------

def _replace_kept(run: Path, resign: bool) -> Path:
    """One kept model's file replaced by random bytes of its size; with ``resign`` its JSON's SHA-256 too."""
    weights = sorted((run / "artifacts" / "weights").glob("*.safetensors"))[0]
    weights.write_bytes(os.urandom(weights.stat().st_size))
    if resign:
        description = json.loads(weights.with_suffix(".json").read_text())
        description["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        weights.with_suffix(".json").write_text(json.dumps(description))
    return weights


@pytest.mark.parametrize("resign", [False, True], ids=["digest-left", "digest-resigned"])
def test_kept_weights_replaced_by_random_bytes_are_listed_as_damaged_and_never_exported(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], resign: bool) -> None:
    damaged = _replace_kept(run, resign)
    store = run / "bocb.db"
    before = fingerprint(store)
    code, out, err = bocb_main("models", str(store), capsys=capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert damaged.name in err and ("not a safetensors file" if resign else "SHA-256") in err, err
    kept = len(list(damaged.parent.glob("*.safetensors")))
    assert f"{kept - 1} kept model(s)" in out  # listed, marked, and not counted as a model
    assert "damaged" in next(line for line in out.splitlines() if damaged.stem[:10] in line)
    out_bundle = tmp_path / "out.zip"
    line = _refused(capsys, "export", str(store), "-o", str(out_bundle), "--weights")
    assert line.startswith("error: --weights:") and damaged.name in line and "not exported" in line, line
    assert not out_bundle.exists() and not list(tmp_path.glob("out.zip*"))
    assert fingerprint(store) == before


def test_a_deleted_kept_model_is_named_by_models_and_refused_by_export_weights(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kept = sorted((run / "artifacts" / "weights").glob("*.safetensors"))
    kept[0].unlink()
    kept[0].with_suffix(".json").unlink()
    store = run / "bocb.db"
    before = fingerprint(store)
    code, out, err = bocb_main("models", str(store), capsys=capsys)
    assert code == 0 and f"{len(kept) - 1} kept model(s)" in out, out + err
    assert "note: 1 kept model(s) the benchmark's keep_weights says exist are not under" in out, out
    assert kept[0].stem[:10] in out.splitlines()[-1]
    out_bundle = tmp_path / "out.zip"
    line = _refused(capsys, "export", str(store), "-o", str(out_bundle), "--weights")
    assert line.startswith("error: --weights: 1 kept model(s)") and kept[0].stem[:10] in line, line
    assert not out_bundle.exists()
    line = _refused(capsys, "export", str(store), "-o", str(out_bundle), "--weights", "--artifact-root",
                    str(tmp_path / "nowhere"))
    assert line == f"error: --artifact-root: {tmp_path / 'nowhere'} is not there: give the folder that holds weights/"
    line = _refused(capsys, "models", str(store), "--artifact-root", str(store))
    assert line == f"error: --artifact-root: {store} is a file: give the folder that holds weights/"
    assert fingerprint(store) == before and not out_bundle.exists()


# -- pickles and prefixes ---------------------------------------------------------------------------------

class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch pwned",))


def test_a_crafted_pickle_is_refused_in_one_line_and_runs_nothing(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": _Payload()}, protocol=4))
    # a process of its own: torch's warning about the pickle's protocol goes to the real stderr there (this
    # process's pytest would catch it), and that warning is what made the refusal three lines
    done = bocb_command("weights", str(evil), "--no-plots", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: weights: cannot read '{evil}' as a torch file (UnpicklingError)\n"
    assert not (tmp_path / "pwned").exists()


def test_an_ambiguous_trial_key_prefix_is_refused_naming_the_matches(
        run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    store = run / "bocb.db"
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        keys = sorted(k for (k,) in db.execute("SELECT trial_key FROM layer_tables"))
    shared = [c for c in "0123456789abcdef" if sum(k.startswith(c) for k in keys) > 1]
    assert shared, f"the fixture's trial keys {keys} share no first character"  # 8 keys: they do (fixed keys)
    matches = [k for k in keys if k.startswith(shared[0])]
    before = fingerprint(store)
    line = _refused(capsys, "weights", shared[0], "--store", str(store), "--no-plots")
    assert line.startswith(f"error: trial key: '{shared[0]}' is ambiguous: {len(matches)} trial keys")
    assert all(key in line for key in matches[:5]), line
    assert fingerprint(store) == before
    code, out, err = bocb_main("weights", matches[0][:12], "--store", str(store), "--no-plots", capsys=capsys)
    assert code == 0 and "alpha" in out, err  # a unique prefix still reads its trial

