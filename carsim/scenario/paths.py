"""Parameter paths: how a value inside a scenario is named.

A path is dotted keys from the top of the scenario; an entry of a list of
labelled items (multipliers, odds ratios) is named by its label,
``pathway.relapse.cd19pos.multipliers.bca_lost.value`` (also written
``multipliers[bca_lost]``), so reordering or extending a list never changes
what a path names.  A list without labels is indexed by position (``.0``).  A
position given where the entry has a label is refused with the name to use
instead.
"""

from __future__ import annotations

import re

LABEL_PATTERN = r"^[a-z][a-z0-9_]*$"
_SEGMENT = re.compile(r"^(?P<key>[^.\[\]]+)(?:\[(?P<label>[^\[\]]+)\])?$")


class PathError(ValueError):
    """A path that names nothing in the scenario; ``done``: the part that did."""

    def __init__(self, message: str, done: str = ""):
        super().__init__(message)
        self.done = done


def parse(path: str) -> list:
    """``'a.b[x].c.0'`` -> ``['a', 'b', 'x', 'c', 0]``: keys or labels, and positions."""
    out: list = []
    for segment in path.split("."):
        match = _SEGMENT.match(segment)
        if match is None:
            raise PathError(f"unreadable parameter path {path!r}: expected keys joined by dots, "
                            "a labelled list entry as key[label]")
        key = match.group("key")
        out.append(int(key) if key.isdigit() else key)
        if match.group("label") is not None:
            out.append(match.group("label"))
    return out


def label_of(item) -> str | None:
    return item.get("label") if isinstance(item, dict) else None


def join(parts) -> str:
    """Inverse of :func:`parse`."""
    return ".".join(map(str, parts))


def locate(data, path: str) -> tuple:
    """The concrete key path (labels resolved to positions) of ``path`` in a
    scenario mapping; :class:`PathError` saying what is wrong otherwise."""
    node, done, loc = data, [], []
    for part in parse(path):
        if isinstance(node, list):
            labels = [label_of(item) for item in node]
            if isinstance(part, str):
                if part not in labels:
                    known = ", ".join(label for label in labels if label) or "none (address them by position)"
                    raise PathError(f"{join(done)!r} has no entry labelled {part!r}; its labels: {known}",
                                    join(done))
                index = labels.index(part)
            else:
                if part >= len(node):
                    raise PathError(f"{join(done)!r} has {len(node)} entries (positions 0..{len(node) - 1}), "
                                    f"got {part}", join(done))
                if labels[part]:
                    rest = path.split(".", len(done) + 1)[-1] if len(parse(path)) > len(done) + 1 else ""
                    raise PathError(f"{join(done)}.{part} names a labelled entry by its position; use its label: "
                                    f"{join([*done, labels[part]])}{'.' + rest if rest else ''}", join(done))
                index = part
            node = node[index]
            loc.append(index)
        elif isinstance(node, dict):
            if isinstance(part, int) and part not in node:
                part = str(part)  # a numeric key written in quotes
            if part not in node:
                raise PathError(f"no key {part!r} under {join(done) or 'the top level'!r}", join(done))
            node = node[part]
            loc.append(part)
        else:
            raise PathError(f"{join(done)!r} is a value, not a mapping", join(done))
        done.append(part)
    return tuple(loc)


def named(data, loc) -> str:
    """The path of a concrete key path, with labelled list entries named by label."""
    node, parts = data, []
    for part in loc:
        if isinstance(node, list):
            label = label_of(node[part])
            parts.append(label or part)
        else:
            parts.append(part)
        node = node[part]
    return join(parts)


def value_at(data, path: str):
    node = data
    for part in locate(data, path):
        node = node[part]
    return node


def set_value_at(data, path: str, value) -> None:
    *parents, last = locate(data, path)
    node = data
    for part in parents:
        node = node[part]
    node[last] = value


def parent_of(path: str) -> str:
    """``'a.b.x.value'`` -> ``'a.b.x'``: the mapping holding a value."""
    return path.rsplit(".", 1)[0]
