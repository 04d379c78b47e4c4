"""Bundles: one benchmark's finished results in one versioned, self-describing file that travels between
machines (`bocb export`, `bocb import`). The format is documented in docs/bundles.md.

A bundle is a zip archive of JSON Lines files, one per store table, and a manifest with each file's
SHA-256. A bundle comes from someone else: reading one executes nothing (JSON only), and every file, row
and value is checked before anything is written (sizes, digests, columns and their types, each trial's key
recomputed from its configuration, each benchmark's id from its spec).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bocb import __version__
from bocb.errors import BocbError, DataError
from bocb.kept import kept_path, kept_sha256, verify_kept
from bocb.protocol import trial_key
from bocb.store import FINISHED_VALUES, MACHINE_COLUMNS, Merged, Store, check_finished_rows, config_columns, metadata

FORMAT = "bocb-bundle"
VERSION = 1
TABLES = ("benchmarks", "trials", "plan", "epochs", "layer_tables")  # in the order they are checked
MAX_MEMBER_BYTES = 4 << 30  # a zip's declared sizes are checked before reading: no zip bomb fills memory
MAX_MANIFEST_BYTES = 1 << 20
MAX_RATIO = 200  # bocb's JSON lines deflate about 5-20x; a member claiming far more is a zip bomb
Rows = dict[str, list[dict[str, Any]]]  # per table, as Store.finished_rows gives them
WEIGHT_MEMBER = re.compile(r"weights/[0-9a-f]{20}\.(safetensors|json)")


def _columns(table: str) -> dict[str, sa.Column]:
    return {c.name: c for c in metadata.tables[table].columns if c.name not in MACHINE_COLUMNS}


def export_bundle(store: Store, benchmark_id: str, path: Path, overwrite: bool = False,
                  weights_root: Path | None = None) -> dict[str, int]:
    """Write the benchmark's finished trials (with their plan, epoch and layer rows) to ``path``, atomically,
    and with ``weights_root`` the kept weights found under it; returns the count of each table and 'weights'."""
    if path.exists() and not overwrite:
        raise BocbError(f"-o: {path} exists; give a new path or --force to replace it")
    rows = _with_artifact_root(store.finished_rows(benchmark_id), None)  # a path on this machine means nothing there
    files = {f"{name}.jsonl": _jsonl(rows[name]) for name in TABLES}
    listed = {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                     "rows": len(rows[name.removesuffix(".jsonl")])} for name, data in files.items()}
    kept = _kept_files([row["key"] for row in rows["trials"]], weights_root) if weights_root else {}
    listed.update({name: {"sha256": kept_sha256(source), "bytes": source.stat().st_size}
                   for name, source in kept.items()})
    manifest = {"format": FORMAT, "version": VERSION, "bocb_version": __version__, "created_at": time.time(),
                "benchmark": benchmark_id, "locks": sorted(_locks(rows["trials"])), "files": listed}
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
        for name, data in files.items():
            archive.writestr(name, data)
        for name, source in kept.items():
            archive.write(source, name)  # streamed from disk
    os.replace(partial, path)  # a reader never sees half a bundle
    return {**{name: len(rows[name]) for name in TABLES}, "weights": len(kept) // 2}


def _kept_files(keys: list[str], root: Path) -> dict[str, Path]:
    """Bundle member name -> file, for the kept weights (and their JSON) of ``keys`` found under ``root``;
    a kept file that does not match its JSON's digest is refused rather than passed on."""
    files = {}
    for key in keys:
        weights = kept_path(root, key)
        if not weights.is_file():
            continue
        try:
            verify_kept(weights)
        except DataError as exc:
            raise BocbError(f"--weights: {exc}; not exported") from None
        files[f"weights/{weights.name}"] = weights
        files[f"weights/{weights.with_suffix('.json').name}"] = weights.with_suffix(".json")
    return files


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()


def _locks(trial_rows: list[dict[str, Any]]) -> set[str]:
    found = (json.loads(row.get("provenance_json") or "{}").get("lock") for row in trial_rows)
    return {str(lock) for lock in found if lock}


def import_bundle(path: Path, store: Store, weights_root: Path | None = None) -> Merged:
    """Check the bundle at ``path`` whole, then merge it into ``store`` in one transaction (keys decide). Its
    kept weights, checked too, go under ``weights_root`` (default: the benchmark's artifact root beside the
    store), except those of trials in conflict and those already there."""
    staged: dict[str, list[Path]] = {}
    roots: list[Path] = []  # the root the import chose: stored with the benchmark if it is new to the store

    def root_of(rows: Rows) -> Path:
        roots.append(weights_root or _artifact_root(rows, store))
        return roots[-1]

    try:
        rows = _read_bundle(path, root_of, staged)
        merged = store.merge_finished(_with_artifact_root(rows, roots[-1] if roots else root_of(rows)))
        for key, (weights, description) in staged.items():
            final = kept_path(weights.parent.parent, key)
            if key not in merged.conflicts and not final.exists():
                os.replace(weights, final)  # the weights first: a kept model is complete once its JSON is there
                os.replace(description, final.with_suffix(".json"))
    finally:
        for partial in (p for pair in staged.values() for p in pair):
            partial.unlink(missing_ok=True)
    return merged


def read_bundle(path: Path) -> Rows:
    """The bundle's rows per table, each checked; a BocbError naming the first problem otherwise."""
    return _read_bundle(path, None, {})


def _read_bundle(path: Path, weights_root: Callable[[Rows], Path] | None, staged: dict[str, list[Path]]) -> Rows:
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = _manifest(archive, path)
            rows = {name: _rows(archive, name, manifest["files"], path) for name in TABLES}
            _check_links(rows, path)
            try:
                check_finished_rows(rows)  # as the store will read them: a report of the merged store cannot fail
            except DataError as exc:
                raise BocbError(f"bundle: {path}: {str(exc).removeprefix('store: ')}") from None
            if weights_root is not None and any(WEIGHT_MEMBER.fullmatch(n) for n in archive.namelist()):
                _stage_weights(archive, manifest["files"], {r["key"] for r in rows["trials"]}, weights_root(rows),
                               staged, path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BocbError(f"bundle: {path} is not a readable bocb bundle ({exc})") from None
    return rows


def _artifact_root(rows: Rows, store: Store) -> Path:
    """Where an import puts kept weights: the root the store holds for this benchmark, else the default for
    the store (planning's rule without a run's folder)."""
    from bocb.spec import parse_spec, upgrade_stored_spec
    from bocb.sweep import artifact_root_for, stored_artifact_root

    benchmark_id = rows["benchmarks"][0]["id"]
    if benchmark_id in store.benchmark_ids():
        return stored_artifact_root(store, benchmark_id)
    spec = parse_spec(upgrade_stored_spec(json.loads(rows["benchmarks"][0]["spec_json"])))
    return artifact_root_for(spec.model_copy(update={"artifact_root": None}), store.url).resolve()


def _with_artifact_root(rows: Rows, root: Path | None) -> Rows:
    """``rows`` with the benchmark's stored artifact root set to ``root`` (None: none, as in a bundle)."""
    benchmark = dict(rows["benchmarks"][0])
    benchmark["spec_json"] = json.dumps({**json.loads(benchmark["spec_json"]),
                                         "artifact_root": None if root is None else str(root)}, sort_keys=True)
    return {**rows, "benchmarks": [benchmark]}


def _stage_weights(archive: zipfile.ZipFile, files: Mapping[str, Any], keys: set[str], root: Path,
                   staged: dict[str, list[Path]], path: Path) -> None:
    """Copy each kept model of the bundle to a temporary name under ``root``, checking its size and SHA-256
    against the manifest and its JSON against the weights, before anything is merged."""
    names = [n for n in archive.namelist() if n.startswith("weights/")]
    for name in sorted(n for n in names if n.endswith(".safetensors")):
        key = name.removeprefix("weights/").removesuffix(".safetensors")
        description = f"weights/{key}.json"
        if key not in keys or description not in names:
            raise BocbError(f"bundle: {path}: {name} belongs to no trial of the bundle, or lacks its JSON")
        (root / "weights").mkdir(parents=True, exist_ok=True)
        partial = [root / "weights" / f".{key}.{os.getpid()}.import", root / "weights" / f".{key}.{os.getpid()}.json"]
        staged[key] = partial
        _copy_checked(archive, name, files, partial[0], path)
        _copy_checked(archive, description, files, partial[1], path)
        text = _json(partial[1].read_bytes(), description)
        if not isinstance(text, dict) or text.get("sha256") != files[name]["sha256"] or text.get("key") != key:
            raise BocbError(f"bundle: {path}: {description} does not describe {name}")


def _copy_checked(archive: zipfile.ZipFile, name: str, files: Mapping[str, Any], target: Path, path: Path) -> None:
    listed = files.get(name)
    info = archive.getinfo(name)
    if not isinstance(listed, dict) or info.file_size > MAX_MEMBER_BYTES or info.file_size != listed.get("bytes"):
        raise BocbError(f"bundle: {path}: {name} is not listed in the manifest with its size")
    digest = hashlib.sha256()
    with archive.open(name) as member, target.open("wb") as out:
        for block in iter(lambda: member.read(1 << 20), b""):
            digest.update(block)
            out.write(block)
    if digest.hexdigest() != listed.get("sha256"):
        raise BocbError(f"bundle: {path}: {name} does not match the SHA-256 in its manifest (damaged or altered)")


def _manifest(archive: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    names = archive.namelist()
    if len(names) != len(set(names)):
        raise BocbError(f"bundle: {path} names a file twice")
    expected = {"manifest.json", *(f"{t}.jsonl" for t in TABLES)}
    found = {n for n in names if not WEIGHT_MEMBER.fullmatch(n)}
    if found != expected:
        raise BocbError(f"bundle: {path} holds {sorted(found ^ expected)[:3]} where a bundle holds exactly "
                        f"{', '.join(sorted(expected))} and kept weights (weights/KEY.safetensors, weights/KEY.json)")
    manifest = _json(_read(archive, "manifest.json", MAX_MANIFEST_BYTES), f"{path}: manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BocbError(f"bundle: {path} is not a {FORMAT} (its manifest says {str(manifest)[:80]})")
    if manifest.get("version") != VERSION:
        raise BocbError(f"bundle: {path} is of format version {manifest.get('version')}; this bocb reads "
                        f"version {VERSION}")
    if not isinstance(manifest.get("files"), dict):
        raise BocbError(f"bundle: {path}: the manifest lists no files")
    return manifest


def _read(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """A member read into memory: its declared size bounded absolutely and by its compressed size (a zip
    bomb declares gigabytes in a few megabytes); zipfile never reads past the declared size."""
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise BocbError(f"bundle: {name} declares {info.file_size} bytes, over {limit}")
    if info.file_size > MAX_RATIO * info.compress_size + (1 << 20):
        raise BocbError(f"bundle: {name} declares {info.file_size} bytes from {info.compress_size} compressed, a "
                        f"ratio over {MAX_RATIO} (a zip bomb, not a bundle bocb wrote)")
    with archive.open(name) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise BocbError(f"bundle: {name} holds more than {limit} bytes")
    return data


def _json(text: bytes | str, where: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BocbError(f"bundle: {where} is not JSON ({exc})") from None


def _rows(archive: zipfile.ZipFile, table: str, files: Mapping[str, Any], path: Path) -> list[dict[str, Any]]:
    name = f"{table}.jsonl"
    data = _read(archive, name, MAX_MEMBER_BYTES)
    listed = files.get(name)
    if not isinstance(listed, dict) or listed.get("sha256") != hashlib.sha256(data).hexdigest():
        raise BocbError(f"bundle: {path}: {name} does not match the SHA-256 in its manifest (damaged or altered)")
    columns = _columns(table)
    rows = [_json(line, f"{name} line {n}") for n, line in enumerate(data.splitlines(), 1)]
    for n, row in enumerate(rows, 1):
        _check_row(row, columns, f"{name} line {n}")
    return rows


def _check_row(row: Any, columns: Mapping[str, sa.Column], where: str) -> None:
    """Exactly the table's columns, each of its stored type (the store's own schema says which)."""
    if not isinstance(row, dict) or set(row) != set(columns):
        found = sorted(row) if isinstance(row, dict) else type(row).__name__
        raise BocbError(f"bundle: {where}: fields {found} where the table has {sorted(columns)}")
    for name, column in columns.items():
        if not _fits(row[name], column):
            raise BocbError(f"bundle: {where}: {name} = {str(row[name])[:60]!r} is not a valid "
                            f"{column.type} value")


def _fits(value: Any, column: sa.Column) -> bool:
    if value is None:
        return bool(column.nullable) and not column.primary_key
    python_type = column.type.python_type
    if python_type is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if python_type is int:
        return isinstance(value, int) and not isinstance(value, bool)
    length = getattr(column.type, "length", None)
    return isinstance(value, str) and (length is None or len(value) <= length)


def _check_links(rows: Mapping[str, list[dict[str, Any]]], path: Path) -> None:
    """Keys decide a merge, so none may lie: each benchmark's id is recomputed from its spec, each trial's key
    from its configuration (which also decides its flat columns); every other row belongs to a trial and a
    benchmark of the bundle."""
    benchmark_ids = {_checked_benchmark(row, path) for row in rows["benchmarks"]}
    keys = {_checked_trial(row, path) for row in rows["trials"]}
    for table in ("plan", "epochs", "layer_tables"):
        stray = [r["trial_key"] for r in rows[table] if r["trial_key"] not in keys]
        stray += [r["benchmark_id"] for r in rows[table] if table == "plan" and r["benchmark_id"] not in benchmark_ids]
        if stray:
            raise BocbError(f"bundle: {path}: {table} names {stray[0][:20]}, which the bundle does not hold")


def _checked_benchmark(row: dict[str, Any], path: Path) -> str:
    from bocb.spec import parse_spec, upgrade_stored_spec

    try:
        spec = parse_spec(upgrade_stored_spec(_json(row["spec_json"], "a benchmark's spec")))
    except BocbError as exc:
        raise BocbError(f"bundle: {path}: benchmark {row['id'][:16]}'s spec: {exc}") from None
    if spec.benchmark_id() != row["id"]:
        raise BocbError(f"bundle: {path}: benchmark {row['id'][:16]} does not match its spec")
    return row["id"]


def _checked_trial(row: dict[str, Any], path: Path) -> str:
    from pydantic import ValidationError

    from bocb.spec import TrialConfig

    where = f"bundle: {path}: trial {row['key'][:20]}"
    if row["state"] not in FINISHED_VALUES:
        raise BocbError(f"{where} is '{row['state'][:20]}'; a bundle holds finished trials only")
    config = _json(row["config_json"], f"{where}'s configuration")
    try:
        canonical = TrialConfig.model_validate(config).model_dump(mode="json")
    except ValidationError as exc:
        raise BocbError(f"{where}: its configuration is invalid ({str(exc).splitlines()[0]})") from None
    if canonical != config:  # every field written out, as bocb stores it: the key hashes them all
        raise BocbError(f"{where}: its configuration is not as bocb writes one (fields missing or altered)")
    if trial_key(config) != row["key"]:
        raise BocbError(f"{where} does not match its configuration (its key would be {trial_key(config)})")
    wrong = [c for c, v in config_columns(config).items() if c != "config_json" and row[c] != v]
    if wrong:
        raise BocbError(f"{where}: {wrong[0]} = {row[wrong[0]]!r:.40} contradicts its configuration")
    return row["key"]
