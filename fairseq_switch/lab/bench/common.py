"""What the benchmark command lines share."""

import argparse
import socket
from typing import Any


def add_options(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    """One `--name` option per keyword (underscores become dashes), typed by its default (an int, a float
    or a string), with no help text."""
    for name, default in defaults.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)


def free_port() -> int:
    """A loopback TCP port that nothing listens on now, for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
