"""``kubectl autoglm``: placeholder entry point replaced by the canary issue's plugin."""

import sys


def main() -> int:
    sys.stderr.write("kubectl autoglm: not implemented yet\n")
    return 2
