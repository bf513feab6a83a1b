"""The two examples of docs/python.md, run as written (two processes over loopback)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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
    recv = subprocess.Popen([sys.executable, str(tmp_path / "receiver.py")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        send = subprocess.run([sys.executable, str(tmp_path / "sender.py")], capture_output=True, text=True, timeout=60, env=env)
        rout, rerr = recv.communicate(timeout=60)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.communicate()
    assert send.returncode == 0, send.stderr
    assert recv.returncode == 0, rerr
    assert send.stdout == "sent 4194304 bytes\n"
    assert rout == "received 4194304 bytes: all correct\n"
