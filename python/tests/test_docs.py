"""The two examples of docs/python.md, run as written (two processes over loopback)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from conftest import run_pair

DOC = Path(__file__).resolve().parents[2] / "docs" / "python.md"


def examples() -> dict[str, str]:
    """The ```python blocks that follow `<!-- example: NAME -->` markers."""
    text = DOC.read_text()
    return dict(re.findall(r"<!-- example: (\S+) -->\n```python\n(.*?)```", text, re.S))


def test_receiver_and_sender_examples(tmp_path: Path, port_base: int) -> None:
    ex = examples()
    assert sorted(ex) == ["receiver.py", "sender.py"]
    for name, code in ex.items():
        (tmp_path / name).write_text(code)
    env = dict(os.environ)  # this test's ports (the examples use the default otherwise)
    send, recv = run_pair([sys.executable, str(tmp_path / "receiver.py")], [sys.executable, str(tmp_path / "sender.py")], env=env)
    assert send.returncode == 0, send.stderr
    assert recv.returncode == 0, recv.stderr
    assert send.stdout == "sent 4194304 bytes\n"
    assert recv.stdout == "received 4194304 bytes: all correct\n"
