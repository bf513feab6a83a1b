#!/usr/bin/env python3
"""Module cycles (and optionally layering) among the files of a Rust crate's src/.

    python3 scripts/modcycles.py src
    python3 scripts/modcycles.py src --layers "ffi runtime engine comm transport wire,tensor,config"

The graph: one node per .rs file under SRC; an edge A -> B when A names a path into B with
`crate::` (or a macro's `$crate::`), `super::` or `self::`, in a `use` declaration (grouped
ones such as `use crate::a::{b, c::d}` included) or inline (`crate::registry::locate_in(..)`).
A path goes to the longest prefix of it that is a file (a/b.rs or a/b/mod.rs), or for
`crate::name!` to the file that defines `#[macro_export] macro_rules! name`; lib.rs is the
root, and edges to the root or to the file itself are left out. Comments, string and character
literals, visibilities (`pub(super)`, `pub(in crate::a)`) and test-only code are left out:
`#[cfg(test)] mod x { ... }` blocks, and files declared as `#[cfg(test)] mod x;` (a cfg that
requires `test`, such as `all(test, unix)`, counts as test-only). Paths that start at a child
module's bare name (`use tcp::X` in transport/mod.rs) and macros called by bare name are not
followed.

Prints each strongly connected group of two or more files (a cycle) with the references behind
its edges, and exits 1 when there is one. With --layers (space-separated layers, top first;
comma-separated modules share a layer; a file's module is its first path component under SRC,
so src/transport/tcp/stream.rs is in `transport`): an edge from a file to a file of a layer
above it is an error too, listed, and so is a module in no layer. Otherwise prints a one-line
summary and exits 0. Python 3 standard library only.
"""

import argparse
import os
import re
import sys

# --- Lexing: Rust source to tokens, without comments and literals ----------------------------

IDENT = re.compile(r"(?:r#)?[A-Za-z_][A-Za-z0-9_]*")
RAW_STRING = re.compile(r'(?:b|c)?r(#*)"')
PLAIN_STRING = re.compile(r'(?:b|c)?"')
CHAR = re.compile(r"b?'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F_]+\}|.)|[^\\'\n])'")
NUMBER = re.compile(r"[0-9][0-9A-Za-z_]*(?:\.[0-9][0-9A-Za-z_]*)?")


def tokens(text):
    """(token, line) pairs: identifiers, `::`, and single punctuation characters. Comments,
    strings, characters and numbers are dropped; lifetimes become one token ('a)."""
    out = []
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    line += text[i] == "\n"
                    i += 1
        elif (m := RAW_STRING.match(text, i)) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = text.find('"' + m.group(1), m.end())
            end = n if end < 0 else end + 1 + len(m.group(1))
            line += text.count("\n", i, end)
            i = end
        elif (m := PLAIN_STRING.match(text, i)) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            j = m.end()
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            line += text.count("\n", i, j)
            i = j + 1
        elif (m := CHAR.match(text, i)) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            i = m.end()
        elif c == "'":  # a lifetime or a label
            m = IDENT.match(text, i + 1)
            out.append(("'" + (m.group(0) if m else ""), line))
            i = m.end() if m else i + 1
        elif m := IDENT.match(text, i):
            out.append((m.group(0).removeprefix("r#"), line))
            i = m.end()
        elif m := NUMBER.match(text, i):
            i = m.end()
        elif text.startswith("::", i):
            out.append(("::", line))
            i += 2
        else:
            out.append((c, line))
            i += 1
    return out


ITEM_KEYWORDS = {"mod", "use", "fn", "impl", "const", "static", "struct", "enum", "union", "type", "trait", "unsafe", "async", "extern", "macro_rules"}


def end_of_item(toks, k):
    """Index of the last token of the item starting at toks[k]: its `;`, or its body's `}`."""
    depth = 0
    for j in range(k, len(toks)):
        t = toks[j][0]
        if t in ("(", "["):
            depth += 1
        elif t in (")", "]"):
            depth -= 1
        elif depth == 0 and t == ";":
            return j
        elif depth == 0 and t == "{":
            return matching(toks, j)
    return len(toks) - 1


def matching(toks, i):
    """Index of the bracket closing the one at toks[i]."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    opening, closing, depth = toks[i][0], pairs[toks[i][0]], 0
    for j in range(i, len(toks)):
        if toks[j][0] == opening:
            depth += 1
        elif toks[j][0] == closing:
            depth -= 1
            if depth == 0:
                return j
    return len(toks) - 1


# --- cfg predicates -----------------------------------------------------------------------------


def parse_cfg(toks, i):
    """Parses a cfg predicate starting at toks[i]: (tree, next index). A tree is a name
    ('test'), ('all'|'any'|'not', [trees]) or None for a key = "value" pair."""
    name = toks[i][0]
    if i + 1 < len(toks) and toks[i + 1][0] == "(" and name in ("all", "any", "not"):
        j, args = i + 2, []
        while j < len(toks) and toks[j][0] != ")":
            if toks[j][0] == ",":
                j += 1
                continue
            tree, j = parse_cfg(toks, j)
            args.append(tree)
        return (name, args), j + 1
    if i + 1 < len(toks) and toks[i + 1][0] == "=":  # feature = "x" (the literal was dropped)
        return None, i + 2
    return name, i + 1


def requires_test(tree):
    """Whether code under this cfg exists only in test builds."""
    if tree == "test":
        return True
    if isinstance(tree, tuple):
        op, args = tree
        if op == "all":
            return any(requires_test(a) for a in args)
        if op == "any":
            return bool(args) and all(requires_test(a) for a in args)
    return False


def attribute_is_test_only(toks, i, j):
    """toks[i:j+1] is `[ ... ]` (an attribute's brackets): is it a cfg that requires test?"""
    if j - i >= 3 and toks[i + 1][0] == "cfg" and toks[i + 2][0] == "(":
        tree, _ = parse_cfg(toks, i + 3)
        return requires_test(tree)
    return False


# --- Paths -----------------------------------------------------------------------------------


def use_tree(toks, i, prefix, out):
    """Expands the use tree at toks[i] (after `use`), appending (segments, line) to out; returns
    the index after it."""
    segs = list(prefix)
    line = toks[i][1] if i < len(toks) else 0
    while i < len(toks):
        t = toks[i][0]
        if t == "{":
            end = matching(toks, i)
            j = i + 1
            while j < end:
                if toks[j][0] == ",":
                    j += 1
                    continue
                j = use_tree(toks, j, segs, out)
            return end + 1
        if t == "*":
            out.append((segs, line))
            return i + 1
        if t == "::":
            i += 1
            continue
        if IDENT.fullmatch(t) or t == "$":
            if t == "$":  # $crate
                i += 1
                t = toks[i][0] if i < len(toks) else ""
            if t == "self" and segs:  # `a::{self, b}`: a itself
                pass
            else:
                segs.append(t)
            line = toks[i][1]
            i += 1
            if i < len(toks) and toks[i][0] == "as":
                i += 2
            if i < len(toks) and toks[i][0] == "::":
                continue
            out.append((segs, line))
            return i
        return i + 1
    return i


class Source:
    """One .rs file: its module path, its references, the test-only child files it declares."""

    def __init__(self, rel, text):
        self.rel = rel
        self.module = module_of(rel)
        self.refs = []  # (absolute segments or None, line, as written)
        self.test_children = set()
        self.exported_macros = set()  # `#[macro_export] macro_rules! name`: crate::name is here
        toks = tokens(text)
        # Child modules declared here (`mod x;`): a path starting with `x::` (2018 uniform paths)
        # refers to the child as `self::x::` would.
        self.children = {toks[k + 1][0] for k in range(len(toks) - 2) if toks[k][0] == "mod" and toks[k + 2][0] == ";"}
        self.scan(toks)

    def scan(self, toks):
        stack = []  # (inline module name, index of its closing brace)
        test_only = False  # the next item is under a test-only cfg
        export = False  # the next item is under #[macro_export]
        i = 0
        while i < len(toks):
            while stack and i > stack[-1][1]:
                stack.pop()
            t = toks[i][0]
            if t == "#" and i + 1 < len(toks) and toks[i + 1][0] in ("[", "!"):
                k = i + 1 if toks[i + 1][0] == "[" else i + 2
                if k < len(toks) and toks[k][0] == "[":
                    j = matching(toks, k)
                    export = export or (j == k + 2 and toks[k + 1][0] == "macro_export")
                    if attribute_is_test_only(toks, k, j):
                        if toks[i + 1][0] == "!":
                            if not stack:
                                self.whole_file_test_only = True
                        else:
                            test_only = True
                    i = j + 1
                    continue
            if export:
                export = False
                if t == "macro_rules" and i + 2 < len(toks) and toks[i + 1][0] == "!":
                    self.exported_macros.add(toks[i + 2][0])
            if test_only:
                test_only = False
                k = i
                if toks[k][0] == "pub":
                    k = matching(toks, k + 1) + 1 if k + 1 < len(toks) and toks[k + 1][0] == "(" else k + 1
                if k + 2 < len(toks) and toks[k][0] == "mod" and toks[k + 2][0] == ";":
                    if not stack:
                        self.test_children.add(toks[k + 1][0])
                    i = k + 3
                    continue
                if k < len(toks) and toks[k][0] in ITEM_KEYWORDS:
                    i = end_of_item(toks, k) + 1
                    continue
            if t == "mod" and i + 2 < len(toks) and IDENT.fullmatch(toks[i + 1][0]) and toks[i + 2][0] == "{":
                stack.append((toks[i + 1][0], matching(toks, i + 2)))
                i += 3
                continue
            if t == "pub" and i + 1 < len(toks) and toks[i + 1][0] == "(":
                i = matching(toks, i + 1) + 1  # pub(crate), pub(super), pub(in path)
                continue
            here = self.module + [name for name, _ in stack]
            if t == "use":
                found = []
                i = use_tree(toks, i + 1, [], found)
                for segs, line in found:
                    self.add(segs, here, line)
                continue
            if t == "$" and i + 1 < len(toks) and toks[i + 1][0] == "crate":
                i += 1
                t = "crate"
            elif t in ("crate", "super", "self") and i and toks[i - 1][0] == "::":
                i += 1  # a::self (the rest of a path already taken)
                continue
            bare = t in self.children and i + 2 < len(toks) and toks[i + 1][0] == "::" and not stack and toks[i - 1][0] != "::"
            if bare or t in ("crate", "super", "self"):
                # A bare child path reads as self::child::...
                segs, line = (["self"] if bare else []), toks[i][1]
                while i < len(toks) and IDENT.fullmatch(toks[i][0]):
                    segs.append(toks[i][0])
                    i += 1
                    if i + 1 < len(toks) and toks[i][0] == "::" and IDENT.fullmatch(toks[i + 1][0]):
                        i += 1
                    else:
                        break
                if len(segs) > 1 + bare:
                    self.add(segs, here, line)
                continue
            i += 1

    whole_file_test_only = False

    def add(self, segs, here, line):
        """Records a path (as written, relative to the module `here`) made absolute; paths that
        do not start with crate, super or self are another crate's or a local name's."""
        if segs and segs[0] in self.children and here == self.module:
            segs = ["self"] + segs
        if not segs or segs[0] not in ("crate", "super", "self"):
            return
        written = "::".join(segs)
        if segs[0] == "crate":
            absolute = segs[1:]
        else:
            base = list(here)
            rest = segs
            if rest[0] == "self":
                rest = rest[1:]
            while rest and rest[0] == "super":
                if not base:
                    return  # above the root: not valid Rust
                base.pop()
                rest = rest[1:]
            absolute = base + rest
        self.refs.append((absolute, line, written))


def module_of(rel):
    """Module path of a file relative to SRC: lib.rs -> [], a/b.rs and a/b/mod.rs -> [a, b]."""
    parts = rel.replace(os.sep, "/").split("/")
    if parts == ["lib.rs"] or parts == ["main.rs"]:
        return []
    last = parts[-1][: -len(".rs")]
    return parts[:-1] if last == "mod" else parts[:-1] + [last]


def load(src):
    """Files under src that are part of non-test builds: {relative path: Source}."""
    files = {}
    for root, dirs, names in os.walk(src):
        dirs.sort()
        for name in sorted(names):
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, src).replace(os.sep, "/")
                with open(path, encoding="utf-8", errors="replace") as f:
                    files[rel] = Source(rel, f.read())
    by_module = {tuple(s.module): rel for rel, s in files.items()}
    # Test-only files: declared `#[cfg(test)] mod x;`, or `#![cfg(test)]` inside; and below them.
    excluded = {rel for rel, s in files.items() if s.whole_file_test_only}
    for s in files.values():
        for child in s.test_children:
            rel = by_module.get(tuple(s.module + [child]))
            if rel:
                excluded.add(rel)
    prefixes = [tuple(files[rel].module) for rel in excluded]
    for rel, s in files.items():
        if any(tuple(s.module[: len(p)]) == p for p in prefixes):
            excluded.add(rel)
    return {rel: s for rel, s in files.items() if rel not in excluded}, sorted(excluded)


def graph(files):
    """{file: {file: [(line, path as written)]}}: each file's edges with the references behind them."""
    by_module = {tuple(s.module): rel for rel, s in files.items()}
    for rel, s in files.items():
        for name in s.exported_macros:
            by_module.setdefault((name,), rel)
    edges = {rel: {} for rel in files}
    for rel, s in files.items():
        for absolute, line, written in s.refs:
            for k in range(len(absolute), 0, -1):
                target = by_module.get(tuple(absolute[:k]))
                if target:
                    break
            else:
                continue  # the root itself
            if target != rel:
                edges[rel].setdefault(target, []).append((line, written))
    return edges


def strongly_connected(edges):
    """Tarjan's algorithm, iteratively: the groups of files that reach each other."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    group.append(w)
                    if w == v:
                        break
                groups.append(sorted(group))
    return groups


def layer_ranks(spec):
    """'a b,c d' -> {a: 0, b: 1, c: 1, d: 2} (0 is the top)."""
    ranks = {}
    for rank, layer in enumerate(spec.split()):
        for module in layer.split(","):
            if module:
                ranks[module] = rank
    return ranks


def top_module(rel):
    parts = rel.split("/")
    return parts[0][: -len(".rs")] if len(parts) == 1 else parts[0]


def describe(refs):
    line, written = refs[0]
    more = f" (+{len(refs) - 1} more)" if len(refs) > 1 else ""
    return f"line {line}: {written}{more}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", nargs="?", default="src", help="the crate's source folder (default: src)")
    ap.add_argument("--edges", action="store_true", help="also print every edge, with the references behind it")
    ap.add_argument("--layers", help='space-separated layers, top first; comma-separated modules share one, e.g. "ffi runtime engine comm transport wire,tensor"')
    args = ap.parse_args()
    if not os.path.isdir(args.src):
        print(f"modcycles: {args.src} is not a folder", file=sys.stderr)
        return 2
    files, excluded = load(args.src)
    edges = graph(files)
    n_edges = sum(len(t) for t in edges.values())
    cycles = [g for g in strongly_connected(edges) if len(g) > 1]
    if args.edges:
        for a in sorted(edges):
            for b in sorted(edges[a]):
                refs = ", ".join(f"{line}: {written}" for line, written in edges[a][b])
                print(f"edge {a} -> {b}   {refs}")
    bad = False
    for k, group in enumerate(sorted(cycles, key=lambda g: (-len(g), g)), 1):
        bad = True
        print(f"cycle {k}: {len(group)} files reach each other: {', '.join(group)}")
        members = set(group)
        for a in group:
            for b in sorted(edges[a]):
                if b in members:
                    print(f"  {a} -> {b}   {describe(edges[a][b])}")
    upward, unlayered = [], set()
    if args.layers:
        ranks = layer_ranks(args.layers)
        for rel in files:
            if rel not in ("lib.rs", "main.rs") and top_module(rel) not in ranks:
                unlayered.add(top_module(rel))
        for a in sorted(edges):
            for b in sorted(edges[a]):
                ma, mb = top_module(a), top_module(b)
                if ma in ranks and mb in ranks and ranks[mb] < ranks[ma]:
                    upward.append((a, b))
        for m in sorted(unlayered):
            print(f"module {m} is in no layer of --layers")
        if upward:
            print(f"{len(upward)} edges to a layer above:")
        for a, b in upward:
            print(f"  {a} ({top_module(a)}) -> {b} ({top_module(b)})   {describe(edges[a][b])}")
        bad = bad or bool(upward or unlayered)
    skipped = f", {len(excluded)} test-only files left out" if excluded else ""
    layered = f", {len(upward)} upward edges" if args.layers else ""
    summary = f"module graph: {len(files)} files, {n_edges} edges{skipped}: {len(cycles)} {'cycle' if len(cycles) == 1 else 'cycles'}{layered}"
    print(summary)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
