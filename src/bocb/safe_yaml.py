"""YAML from others, read so that it cannot hurt: PyYAML's safe loader (no object construction), plus what
it leaves open. A key given twice is refused (PyYAML keeps the last silently); aliases that would expand to
more than MAX_NODES values ("billion laughs": a few lines naming a list of lists of a list ...) are refused
before anything walks the expansion; nesting deeper than MAX_DEPTH is refused before Python's recursion
limit turns it into a traceback. Each refusal is one SpecError naming the file and the line.

By hand because neither PyYAML nor ruamel.yaml bounds alias expansion or depth.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bocb.errors import SpecError

MAX_NODES = 100_000  # scalars, lists and mappings after expanding every alias: a spec has a few hundred
MAX_DEPTH = 50       # a spec nests five deep


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping naming a key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict):
                continue  # unhashable: the base class reports it
            if isinstance(key, str) and "\0" in key:  # no spec field has one; as a path it would crash later
                raise SpecError("spec", f"the key {key!r} at line {key_node.start_mark.line + 1} holds a NUL byte")
            if key in seen:
                raise SpecError("spec", f"'{key}' is given twice (lines {seen[key] + 1} and "
                                        f"{key_node.start_mark.line + 1}): remove one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int], depth: int = 0) -> int:
    """Values under ``node`` once every alias is expanded (an alias is the same node object, so the memo
    keeps this linear in the file); raises SpecError past MAX_DEPTH or MAX_NODES."""
    if depth > MAX_DEPTH:
        raise SpecError("spec", f"nested deeper than {MAX_DEPTH} levels at line {node.start_mark.line + 1}")
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo, depth + 1) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo, depth + 1) + _expanded_size(v, memo, depth + 1) for k, v in node.value)
    else:
        size = 1
    if size > MAX_NODES:
        raise SpecError("spec", f"expands to more than {MAX_NODES:,} values (aliases at line "
                                f"{node.start_mark.line + 1}): a spec needs a few hundred")
    memo[id(node)] = size
    return size


def load_yaml(path: Path) -> Any:
    """The YAML document in ``path``, bounded as the module says; one-line SpecErrors for every refusal."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError("spec", f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        loader = _UniqueKeyLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _expanded_size(node, {})
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except RecursionError:
        raise SpecError("spec", f"{path} nests too deep to read (more than {MAX_DEPTH} levels)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # a reader error spans lines
        raise SpecError("spec", f"malformed YAML{where}: {problem}") from None
