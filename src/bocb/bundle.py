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
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bocb import __version__
from bocb.errors import BocbError, DataError
from bocb.kept import check_safetensors, kept_path, kept_sha256, verify_kept
from bocb.protocol import trial_key
from bocb.store import (
    FINISHED_VALUES,
    MACHINE_COLUMNS,
    Merged,
    Store,
    config_columns,
    json_shape_problem,
    metadata,
    normalise_url,
)

FORMAT = "bocb-bundle"
VERSION = 1
TABLES = ("benchmarks", "trials", "plan", "epochs", "layer_tables")  # in the order they are checked
# A member's declared size is checked before it is read and its bytes counted while read: no zip bomb fills
# memory or disk. A table is held in memory while checked; a kept model is streamed to disk.
MAX_TABLE_BYTES = 1 << 30
MAX_WEIGHTS_BYTES = 4 << 30  # the paper's largest backbones keep under 1 GiB
MAX_MANIFEST_BYTES = 1 << 20
MAX_RATIO = 200  # bocb's JSON lines deflate about 5-20x; a member claiming far more is a zip bomb
BLOCK = 1 << 20
INT64 = 1 << 63
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
    a kept file that is not what its JSON describes (digest, safetensors format) is refused, not passed on."""
    files = {}
    for key in keys:
        weights = kept_path(root, key)
        if not weights.is_file():
            continue
        try:  # a digest can be re-signed: only a file that loads as a kept model travels as one
            verify_kept(weights)
        except DataError as exc:
            raise BocbError(f"--weights: {str(exc).removeprefix('kept weights: ')}; not exported") from None
        files[f"weights/{weights.name}"] = weights
        files[f"weights/{weights.with_suffix('.json').name}"] = weights.with_suffix(".json")
    return files


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()


def _locks(trial_rows: list[dict[str, Any]]) -> set[str]:
    found = (json.loads(row.get("provenance_json") or "{}").get("lock") for row in trial_rows)
    return {str(lock) for lock in found if lock}


def import_bundle(path: Path, store: str | os.PathLike[str] | Store, weights_root: Path | None = None) -> Merged:
    """Check the bundle at ``path`` whole, then merge it into ``store`` in one transaction (keys decide). A
    store given by its URL is opened (or created) only once the bundle passed: a refused bundle leaves no
    new store behind. Its kept weights, checked too, go under ``weights_root`` (default: the benchmark's
    artifact root beside the store), except those of trials in conflict and those already there."""
    from bocb.sweep import stored_root

    url = store.url if isinstance(store, Store) else normalise_url(store)
    field = "--artifact-root" if weights_root is not None else "the benchmark's artifact root"
    if weights_root is not None and weights_root.exists() and not weights_root.is_dir():
        raise BocbError(f"--artifact-root: {weights_root} is a file; give a folder for the kept weights "
                        "(created if missing)")
    rows, files = _checked_bundle(path)
    staged: dict[str, list[Path]] = {}
    created: list[Path] = []
    try:
        root = weights_root or _artifact_root(rows, url)
        _stage_weights(path, files, rows, root, field, staged, created)
        merged = (store if isinstance(store, Store) else Store(url)).merge_finished(
            _with_artifact_root(rows, stored_root(root, url)))
        for key, (weights, description) in staged.items():
            final = kept_path(weights.parent.parent, key)
            if key not in merged.conflicts and not final.exists():
                os.replace(weights, final)  # the weights first: a kept model is complete once its JSON is there
                os.replace(description, final.with_suffix(".json"))
    except BaseException:
        _remove_empty(staged, created)
        raise
    _remove_empty(staged, [])
    return merged


def _remove_empty(staged: dict[str, list[Path]], created: list[Path]) -> None:
    """Remove the staged files left over, and the folders this import made when it failed (only if empty)."""
    for partial in (p for pair in staged.values() for p in pair):
        partial.unlink(missing_ok=True)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:  # not empty: someone else's files are there now
            break


def read_bundle(path: Path) -> Rows:
    """The bundle's rows per table, each checked; a BocbError naming the first problem otherwise."""
    return _checked_bundle(path)[0]


def _checked_bundle(path: Path) -> tuple[Rows, Mapping[str, Any]]:
    """The bundle's rows, every one checked, and its manifest's files."""
    with _open(path) as archive:
        manifest = _manifest(archive, path)
        rows = {name: _rows(archive, name, manifest["files"], path) for name in TABLES}
    _check_links(rows, path)
    return rows, manifest["files"]


READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError)


def _open(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except READ_ERRORS as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: BaseException) -> BocbError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return BocbError(f"bundle: {path} is not a readable bocb bundle ({reason})")


def _blocks(archive: zipfile.ZipFile, name: str, limit: int, path: Path) -> Iterator[bytes]:
    """The member ``name``'s bytes, streamed: refused when it declares more than ``limit`` (a zip bomb is
    small on disk and huge inside), and when it holds more than it declares (a header can lie)."""
    info = archive.getinfo(name)
    declared = info.file_size
    if declared > limit:
        raise BocbError(f"bundle: {path}: {name} declares {declared} bytes, over the {limit} a bundle's "
                        f"{'kept model' if name.startswith('weights/') else 'file'} may hold")
    if declared > MAX_RATIO * info.compress_size + BLOCK:
        raise BocbError(f"bundle: {path}: {name} declares {declared} bytes from {info.compress_size} compressed, a "
                        f"ratio over {MAX_RATIO} (a zip bomb, not a bundle bocb wrote)")
    read = 0
    try:
        with archive.open(name) as member:
            while block := member.read(min(BLOCK, declared - read + 1)):
                read += len(block)
                if read > declared:
                    raise BocbError(f"bundle: {path}: {name} holds more than the {declared} bytes it declares")
                yield block
    except READ_ERRORS as exc:  # a damaged deflate stream, a wrong CRC, an encrypted member
        raise _unreadable(path, exc) from None


def _read(archive: zipfile.ZipFile, name: str, limit: int, path: Path) -> bytes:
    return b"".join(_blocks(archive, name, limit, path))


def _artifact_root(rows: Rows, url: str) -> Path:
    """Where an import puts kept weights: the root the store holds for this benchmark, else the default for
    the store (planning's rule without a run's folder). The store is only read here (nothing is created
    before the import is known to go through)."""
    from bocb.spec import parse_spec, upgrade_stored_spec
    from bocb.sweep import artifact_root_for, stored_artifact_root

    benchmark_id = rows["benchmarks"][0]["id"]
    try:
        existing = Store(url, read_only=True)
    except BocbError:  # no store there yet (or none of this schema): the benchmark is new to it
        existing = None
    if existing is not None and benchmark_id in existing.benchmark_ids():
        return stored_artifact_root(existing, benchmark_id)
    spec = parse_spec(upgrade_stored_spec(json.loads(rows["benchmarks"][0]["spec_json"])))
    return artifact_root_for(spec.model_copy(update={"artifact_root": None}), url).resolve()


def _with_artifact_root(rows: Rows, root: str | None) -> Rows:
    """``rows`` with the benchmark's stored artifact root set to ``root`` (None: none, as in a bundle)."""
    benchmark = dict(rows["benchmarks"][0])
    benchmark["spec_json"] = json.dumps({**json.loads(benchmark["spec_json"]), "artifact_root": root},
                                        sort_keys=True)
    return {**rows, "benchmarks": [benchmark]}


def _stage_weights(path: Path, files: Mapping[str, Any], rows: Rows, root: Path, field: str,
                   staged: dict[str, list[Path]], created: list[Path]) -> None:
    """Copy each kept model of the bundle to a temporary name under ``root``, checking its size, SHA-256 and
    format and its JSON against the weights, before anything is merged. A folder that cannot be written is
    ``field``'s problem, not the bundle's."""
    keys = {r["key"] for r in rows["trials"]}
    with _open(path) as archive:
        names = [n for n in archive.namelist() if n.startswith("weights/")]
        if names:
            created += _make_folder(root / "weights", field)
        for name in sorted(n for n in names if n.endswith(".safetensors")):
            key = name.removeprefix("weights/").removesuffix(".safetensors")
            description = f"weights/{key}.json"
            if key not in keys or description not in names:
                raise BocbError(f"bundle: {path}: {name} belongs to no trial of the bundle, or lacks its JSON")
            partial = [root / "weights" / f".{key}.{os.getpid()}.import",
                       root / "weights" / f".{key}.{os.getpid()}.json"]
            staged[key] = partial
            for member, target in zip((name, description), partial):
                try:
                    _copy_checked(archive, member, files, target, path)
                except OSError as exc:  # reading the bundle raises BocbErrors: this is the target's
                    raise BocbError(f"{field}: cannot write {target} ({exc.strerror or exc})") from None
            _check_staged(partial, key, files[name]["sha256"], name, path)


def _check_staged(partial: list[Path], key: str, sha256: str, name: str, path: Path) -> None:
    """The staged model is a bocb safetensors file and its JSON describes it (digest and key)."""
    text = _json(partial[1].read_bytes(), f"{path}: weights/{key}.json")
    if not isinstance(text, dict) or text.get("sha256") != sha256 or text.get("key") != key:
        raise BocbError(f"bundle: {path}: weights/{key}.json does not describe {name}")
    try:
        check_safetensors(partial[0])
    except DataError as exc:  # its digest matched a re-signed manifest: the format still has to be right
        raise BocbError(f"bundle: {path}: {name} {str(exc).split(' is ', 1)[-1]}") from None


def _make_folder(folder: Path, field: str) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, deepest first (removed again if the import
    fails). One that cannot be made is ``field``'s problem."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BocbError(f"{field}: cannot create {folder} ({exc.strerror or exc})") from None
    return missing


def _copy_checked(archive: zipfile.ZipFile, name: str, files: Mapping[str, Any], target: Path, path: Path) -> None:
    listed = files.get(name)
    if not isinstance(listed, dict) or archive.getinfo(name).file_size != listed.get("bytes"):
        raise BocbError(f"bundle: {path}: {name} is not listed in the manifest with its size")
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for block in _blocks(archive, name, MAX_WEIGHTS_BYTES, path):
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
    manifest = _json(_read(archive, "manifest.json", MAX_MANIFEST_BYTES, path), f"{path}: manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BocbError(f"bundle: {path} is not a {FORMAT} (its manifest says {str(manifest)[:80]})")
    if manifest.get("version") != VERSION:
        raise BocbError(f"bundle: {path} is of format version {manifest.get('version')}; this bocb reads "
                        f"version {VERSION}")
    if not isinstance(manifest.get("files"), dict):
        raise BocbError(f"bundle: {path}: the manifest lists no files")
    return manifest


def _json(text: bytes | str, where: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise BocbError(f"bundle: {where} is not JSON ({reason})") from None


def _rows(archive: zipfile.ZipFile, table: str, files: Mapping[str, Any], path: Path) -> list[dict[str, Any]]:
    name = f"{table}.jsonl"
    data = _read(archive, name, MAX_TABLE_BYTES, path)
    listed = files.get(name)
    if not isinstance(listed, dict) or listed.get("sha256") != hashlib.sha256(data).hexdigest():
        raise BocbError(f"bundle: {path}: {name} does not match the SHA-256 in its manifest (damaged or altered)")
    columns = _columns(table)
    rows = [_json(line, f"{name} line {n}") for n, line in enumerate(data.splitlines(), 1)]
    primary = [c for c, column in columns.items() if column.primary_key]
    seen: set[tuple[Any, ...]] = set()
    for n, row in enumerate(rows, 1):
        _check_row(row, columns, f"{name} line {n}")
        identity = tuple(row[c] for c in primary)
        if identity in seen:  # the merge would take one of them, unsaid
            raise BocbError(f"bundle: {name} line {n}: {', '.join(primary)} {identity} appears twice")
        seen.add(identity)
    return rows


def _check_row(row: Any, columns: Mapping[str, sa.Column], where: str) -> None:
    """Exactly the table's columns, each of its stored type (the store's own schema says which), and each
    JSON text column JSON of the shape bocb reads (a record merged is read by every report after)."""
    if not isinstance(row, dict) or set(row) != set(columns):
        found = sorted(row) if isinstance(row, dict) else type(row).__name__
        raise BocbError(f"bundle: {where}: fields {found} where the table has {sorted(columns)}")
    for name, column in columns.items():
        if not _fits(row[name], column):
            raise BocbError(f"bundle: {where}: {name} = {str(row[name])[:60]!r} is not a valid "
                            f"{column.type} value")
        if name.endswith("_json") and row[name] is not None:
            problem = json_shape_problem(name, _json(row[name], f"{where}: {name}"))
            if problem:
                raise BocbError(f"bundle: {where}: {name} is JSON but not {problem}")


def _fits(value: Any, column: sa.Column) -> bool:
    if value is None:
        return bool(column.nullable) and not column.primary_key
    python_type = column.type.python_type
    if isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
        return False  # no store column holds it (SQLite's and PostgreSQL's integers are 64-bit)
    if python_type is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if python_type is int:
        return isinstance(value, int) and not isinstance(value, bool)
    length = getattr(column.type, "length", None)
    return isinstance(value, str) and "\x00" not in value and (length is None or len(value) <= length)


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
