"""YAML for configs: one document, parsed with PyYAML's safe loader plus the checks raygen adds.

A key given twice in one mapping is refused (plain PyYAML keeps the last silently), and so is a
document whose aliases expand past :data:`MAX_YAML_VALUES` values or refer to themselves: PyYAML
shares an anchored value between its aliases, but every consumer of the loaded config (type checks,
error messages, ``config.yaml``) walks the expanded form, so nested aliases ("billion laughs") would
grow without bound there. Every problem is a :class:`YamlProblem` with a 1-based line.
"""
from __future__ import annotations

import yaml

MAX_YAML_VALUES = 100_000
"""Most values (mappings, lists, scalars) a YAML document or override may hold once its aliases are
expanded: nested aliases ("billion laughs") grow exponentially, and every consumer of the loaded config
(type checks, error messages, ``config.yaml``) walks the expanded form. A real config holds ~1,000."""


class YamlProblem(Exception):
    """A YAML text raygen refuses: ``msg`` (one line) at ``line`` (1-based, or None); ``syntax`` when PyYAML
    itself rejected it (``msg`` then says where)."""

    def __init__(self, line: int | None, msg: str, syntax: bool = False):
        super().__init__(msg)
        self.line, self.msg, self.syntax = line, msg, syntax


def _one_line(e: yaml.YAMLError) -> str:
    """A YAML error as one line: its problem and where (line/column are 1-based)."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    context = getattr(e, "context", None)
    return f"{problem}{where}" + (f" ({context})" if context else "")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain PyYAML keeps the last silently) and
    records every alias it meets (line, anchored node), for :func:`_check_expansion`."""

    def __init__(self, stream):
        super().__init__(stream)
        self.alias_uses: list[tuple[int, str, yaml.Node]] = []

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            if event.anchor in self.anchors:  # else PyYAML reports the undefined alias
                self.alias_uses.append((event.start_mark.line + 1, event.anchor, self.anchors[event.anchor]))
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' may be overridden by explicit keys
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
            except TypeError:  # an unhashable key: let PyYAML report it
                continue
            if dup:
                raise _DuplicateKey(key, key_node.start_mark.line + 1, node)
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key, line: int, node):
        super().__init__(key)
        self.key, self.line, self.node = key, line, node


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _expanded_sizes(root: yaml.Node) -> dict[int, int]:
    """Values each node holds with aliases expanded, by ``id(node)``; aliases share their anchor's node,
    so this is one pass over the distinct nodes (iterative: no recursion limit). YamlProblem on an
    alias inside its own anchor (a recursive document)."""
    size: dict[int, int | None] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            size[id(node)] = 1 + sum(size[id(k)] for k in _children(node))
            continue
        if id(node) in size:
            if size[id(node)] is None:  # still open: an ancestor of the node being expanded
                raise YamlProblem(node.start_mark.line + 1, "a YAML alias inside its own anchor (a recursive "
                                                             "value): write the value out")
            continue
        size[id(node)] = None
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if size.get(id(k)) is None)  # unseen or open
    return size


def _check_expansion(root: yaml.Node, alias_uses: list) -> None:
    """YamlProblem naming the line of the heaviest alias when the document, aliases expanded, holds more
    than :data:`MAX_YAML_VALUES` values."""
    if not alias_uses:  # without aliases a document is no bigger than its text
        return
    sizes = _expanded_sizes(root)
    if sizes[id(root)] <= MAX_YAML_VALUES:
        return
    line, anchor, _ = max(alias_uses, key=lambda use: sizes[id(use[2])])  # the first of the heaviest
    raise YamlProblem(line, f"YAML aliases expand to more than {MAX_YAML_VALUES:,} values (alias *{anchor} "
                             "nested in other aliases); raygen refuses such documents: write the values out")


def load_bounded(text: str):
    """The one YAML document in ``text`` (None when empty), with :class:`_UniqueKeyLoader`'s checks and the
    alias expansion bounded; YamlProblem otherwise."""
    loader = _UniqueKeyLoader(text)
    root = None
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_expansion(root, loader.alias_uses)
        return loader.construct_document(root)
    except _DuplicateKey as e:
        raise YamlProblem(e.line, f"duplicate key {_dotted(root, e.node, e.key)!r}") from None
    except RecursionError:
        raise YamlProblem(None, "values nested too deeply") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise YamlProblem(mark.line + 1 if mark else None, f"invalid YAML: {_one_line(e)}", syntax=True) from None
    finally:
        loader.dispose()
def _dotted(root, node, key) -> str:
    """Dotted path of ``key`` in mapping ``node`` under the document's root node."""
    def walk(cur, path):
        if cur is node:
            return path
        if isinstance(cur, yaml.MappingNode):
            for k, v in cur.value:
                found = walk(v, path + [str(k.value)])
                if found is not None:
                    return found
        elif isinstance(cur, yaml.SequenceNode):
            for i, v in enumerate(cur.value):
                found = walk(v, path[:-1] + [f"{path[-1]}[{i}]"] if path else [f"[{i}]"])
                if found is not None:
                    return found
        return None

    path = walk(root, []) if root is not None else None
    return ".".join((path or []) + [str(key)])
