#!/usr/bin/env python3
"""Tests of scripts/modcycles.py on small crates written to a temporary folder.

    python3 scripts/modcycles_test.py
"""

import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "modcycles.py")

# a -> b/mod.rs (b::X), a -> b/inner.rs (b::inner::Y), b/mod.rs -> b/inner.rs (self::inner),
# b/inner.rs -> c (super::super::c), c -> a (an inline crate::a path): one cycle of those four.
# d -> e (super::super from an inline module), e -> d (the file of an exported macro, through
# $crate): another. Nothing else may count: comments, strings, visibilities, test-only blocks,
# items and files, references to the root.
TREE = {
    "lib.rs": """
        pub mod a;
        pub mod b;
        pub mod c;
        pub mod d;
        pub mod e;
        #[cfg(test)]
        mod t;
        pub static ROOT: u8 = 0;
    """,
    "a.rs": """
        //! Mentions crate::d::Nothing in a doc comment.
        use crate::b::{X, inner::{self as i, Y}};
        /* crate::d::Nothing /* nested */ still a comment crate::d::Nothing */
        pub fn thing() -> &'static str { let _c = 'x'; let _q = '"'; "crate::d::Nothing" }
        pub fn root() -> u8 { crate::ROOT }
        pub(in crate::a) fn hidden() {}
        const RAW: &str = r#"crate::d::"Nothing""#;
        #[cfg(test)]
        use crate::d::TestOnlyUse;
        #[cfg(all(test, unix))]
        mod tests {
            use crate::d::Nothing;
        }
        #[cfg(test)]
        fn helper() { crate::d::nothing(); }
    """,
    "b/mod.rs": """
        pub mod inner;
        pub struct X;
        pub(super) fn f() { self::inner::g() }
    """,
    "b/inner.rs": """
        use super::super::c::W;
        pub struct Y;
        pub fn g() {}
    """,
    "c.rs": """
        pub struct W;
        pub fn f() -> &'static str { crate::a::thing() }
    """,
    "d.rs": """
        #[macro_export]
        macro_rules! log_it { () => {} }
        #[cfg(not(test))]
        mod real { pub fn f() { super::super::e::f(); } }
    """,
    "e.rs": """
        pub fn f() {}
        macro_rules! m { () => { $crate::log_it!() } }
    """,
    "t.rs": """
        use crate::d::Everything;
        use crate::a::thing;
    """,
}


def run(tree, *args):
    with tempfile.TemporaryDirectory() as tmp:
        for rel, text in tree.items():
            path = os.path.join(tmp, "src", rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(textwrap.dedent(text))
        p = subprocess.run([sys.executable, SCRIPT, os.path.join(tmp, "src"), "--edges", *args], capture_output=True, text=True)
        edges = {tuple(line.split()[1:4:2]) for line in p.stdout.splitlines() if line.startswith("edge ")}
        return p.returncode, p.stdout, edges


class ModCycles(unittest.TestCase):
    def test_a_cycle(self):
        rc, out, edges = run(TREE)
        self.assertEqual(rc, 1, out)
        self.assertIn("cycle 1: 4 files reach each other: a.rs, b/inner.rs, b/mod.rs, c.rs", out)
        self.assertEqual(
            edges,
            {
                ("a.rs", "b/mod.rs"),
                ("a.rs", "b/inner.rs"),
                ("b/mod.rs", "b/inner.rs"),
                ("b/inner.rs", "c.rs"),
                ("c.rs", "a.rs"),
                ("d.rs", "e.rs"),
                ("e.rs", "d.rs"),
            },
        )
        self.assertIn("  e.rs -> d.rs   line 3: crate::log_it", out)
        self.assertIn("cycle 2: 2 files reach each other: d.rs, e.rs", out)
        self.assertIn("1 test-only files left out: 2 cycles", out)

    def test_no_cycle(self):
        tree = dict(TREE, **{"c.rs": "pub struct W;\n", "d.rs": "#[macro_export]\nmacro_rules! log_it { () => {} }\n"})
        rc, out, edges = run(tree)
        self.assertEqual(rc, 0, out)
        self.assertNotIn(("c.rs", "a.rs"), edges)
        self.assertEqual(out.splitlines()[-1], "module graph: 7 files, 5 edges, 1 test-only files left out: 0 cycles")

    def test_layers(self):
        tree = dict(TREE, **{"c.rs": "pub struct W;\n", "d.rs": "pub fn f() { crate::b::inner::g() }\n"})
        # a on top, then b, then c, d and e in one layer: d -> b/inner goes up.
        rc, out, _ = run(tree, "--layers", "a b c,d,e")
        self.assertEqual(rc, 1, out)
        self.assertIn("1 edges to a layer above:", out)
        self.assertIn("  d.rs (d) -> b/inner.rs (b)   line 1: crate::b::inner::g", out)
        # Within a layer and downwards: fine.
        rc, out, _ = run(tree, "--layers", "a b,d c,e")
        self.assertEqual(rc, 0, out)
        self.assertTrue(out.endswith("0 cycles, 0 upward edges\n"), out)
        # A module in no layer is an error.
        rc, out, _ = run(tree, "--layers", "a b c,e")
        self.assertEqual(rc, 1, out)
        self.assertIn("module d is in no layer of --layers", out)


if __name__ == "__main__":
    unittest.main()
