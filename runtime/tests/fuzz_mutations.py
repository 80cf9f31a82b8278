"""The mutations of the runtime fuzzer (tests/fuzzing.py): pure functions of a seeded random.Random."""
from __future__ import annotations

import io
import json
import random
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bundle"


def mutate_bytes(data: bytes, rng: random.Random, donor: bytes) -> bytes:
    """Byte flips, truncation, splices from another model, zeroed ranges, duplicated chunks."""
    b = bytearray(data)
    op = rng.choice(["flip", "flip", "truncate", "splice", "zero", "dup", "flip_header"])
    if op == "flip":
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == "flip_header":  # the first KB holds offsets and tables: most likely to derail a parser
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(min(len(b), 1024))] = rng.randrange(256)
    elif op == "truncate":
        b = b[:rng.randrange(len(b))]
    elif op == "splice":
        start, n = rng.randrange(len(donor)), rng.randint(1, 512)
        at = rng.randrange(len(b))
        b[at:at + n] = donor[start:start + n]
    elif op == "zero":
        at, n = rng.randrange(len(b)), rng.randint(1, 256)
        b[at:at + n] = bytes(len(b[at:at + n]))
    else:
        at, n = rng.randrange(len(b)), rng.randint(1, 256)
        b[at:at] = b[at:at + n]
    return bytes(b)


BAD_VALUES: List[Any] = ["x", "", "abc", 0, -1, 1.5, 10 ** 30, 1e308, float("nan"), float("inf"), None, True,
                         False, [], [1, "a"], {}, {"a": 1}, "../../etc/passwd", "/etc/passwd", "a\\b", "a\x00b",
                         "x" * 5000]
PATH_ESCAPES = ["../outside.tflite", "../../outside.tflite", "/etc/passwd", "sub/../../x", "a\\..\\b", "a\x00b",
                "", ".", "link-out/x", "link-out"]


def _paths(obj: Any, prefix=()) -> List[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _set(obj: Any, path: tuple, value: Any, delete: bool = False) -> Any:
    if not path:
        return value
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return obj


def mutate_manifest(d: Dict[str, Any], rng: random.Random) -> str:
    """A JSON-level mutation of the manifest, returned as the text to write."""
    op = rng.choice(["type", "type", "delete", "path", "path", "deep", "text", "huge"])
    paths = _paths(d)
    if op == "deep":
        depth = rng.choice([40, 1000, 100_000])
        return json.dumps(d)[:-1] + ', "extra_nesting": ' + "[" * depth + "]" * depth + "}"
    if op == "text":
        t = bytearray(json.dumps(d, indent=1).encode())
        for _ in range(rng.randint(1, 8)):
            t[rng.randrange(len(t))] = rng.randrange(256)
        return t.decode("utf-8", "replace") if rng.random() < 0.5 else t[:rng.randrange(len(t))].decode("latin-1")
    if op == "huge":
        return json.dumps(d)[:-1] + ', "n": ' + "9" * rng.choice([20, 5000]) + "}"
    if op == "path":
        targets = [p for p in paths if p and p[-1] in ("path", "check_outputs", "inputs", "keras_outputs")
                   and isinstance(_get(d, p), str)]
        d = _set(d, rng.choice(targets), rng.choice(PATH_ESCAPES))
    elif op == "delete":
        p = rng.choice([p for p in paths if p])
        d = _set(d, p, None, delete=True)
    else:
        p = rng.choice(paths)
        d = _set(d, p, rng.choice(BAD_VALUES))
    return json.dumps(d, allow_nan=True)


def _get(obj, path):
    for k in path:
        obj = obj[k]
    return obj


def make_archive(case_dir: Path, rng: random.Random, watched: Path) -> Path:
    """A crafted bundle archive: traversal, links, devices, bombs, many members, truncation, nesting."""
    kind = rng.choice(["tar.gz", "zip", "tar"])
    op = rng.choice(["traversal", "absolute", "symlink", "hardlink", "device", "bomb", "many", "truncate",
                     "flip", "nested", "two", "setuid", "ok"])
    if kind == "zip" and op in ("symlink", "hardlink", "device", "setuid"):
        op = rng.choice(["traversal", "bomb", "many", "truncate", "flip"])
    arc = case_dir / f"b.{kind}"
    members: List[tuple] = []  # (name, bytes | None for special, tarinfo tweak)
    top = {"nested": "TOP/bundle/", "two": "A/"}.get(op, "bundle/")
    for f in sorted(FIXTURE.iterdir()):
        members.append((top + f.name, f.read_bytes(), None))
    if op == "two":
        members += [("B/" + f.name, f.read_bytes(), None) for f in sorted(FIXTURE.iterdir())]
    depth = rng.randint(1, 3)  # from the extraction dir, 3 levels up is still inside the watched directory
    if op == "traversal":
        members.append(("../" * depth + "escaped.txt", b"pwned", None))
    elif op == "absolute":
        members.append((str(watched / "absolute-escape.txt"), b"pwned", None))
    elif op == "bomb":
        members.append(("bundle/zeros.bin", b"\0" * rng.choice([4, 12]) * (1 << 20), None))
    elif op == "many":
        members += [(f"bundle/m{i}.txt", b"", None) for i in range(300)]  # the cap is 256
    elif op in ("symlink", "hardlink", "device", "setuid"):
        members.append(("bundle/special", None, op))
    if kind == "zip":
        with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data, _ in members:
                z.writestr(name, data)
    else:
        with tarfile.open(arc, "w:gz" if kind == "tar.gz" else "w") as t:
            for name, data, special in members:
                ti = tarfile.TarInfo(name)
                if special == "symlink":
                    ti.type, ti.linkname = tarfile.SYMTYPE, "../" * depth + "watched-target"
                elif special == "hardlink":
                    ti.type, ti.linkname = tarfile.LNKTYPE, str(watched / "hard-target")
                elif special == "device":
                    ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
                elif special == "setuid":
                    ti.mode, data = 0o4755, b"#!/bin/sh\n"
                if data is not None:
                    ti.size = len(data)
                    t.addfile(ti, io.BytesIO(data))
                else:
                    t.addfile(ti)
            if op == "symlink":  # then a file written "through" the link
                ti = tarfile.TarInfo("bundle/special/through.txt")
                ti.size = 5
                t.addfile(ti, io.BytesIO(b"pwned"))
    raw = arc.read_bytes()
    if op == "truncate":
        arc.write_bytes(raw[:rng.randrange(len(raw))])
    elif op == "flip":
        arc.write_bytes(mutate_bytes(raw, rng, raw))
    return arc
