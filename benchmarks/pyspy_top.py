"""Summarise py-spy collapsed stacks (``py-spy record --format raw --threads``), e.g. bench_http_exllama's --profile.

    python benchmarks/pyspy_top.py profile-64-worker-idle.txt profile-64-worker-gil.txt [--top 12]

For each file and each thread: its share of the samples, then the frames where it spent them, by self time (the
innermost frame) and by inclusive time (any frame on the stack). With a ``--gil`` recording the shares say which
thread held the GIL how often; with an ``--idle`` one, where each thread was, running or waiting.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

_LINE = re.compile(r"^thread \((?P<tid>[^)]*)\): (?P<stack>.*) (?P<count>\d+)$")


def read(path: Path) -> dict[str, list[tuple[list[str], int]]]:
    """Stacks by thread ("name tid"): (frames outermost first, samples)."""
    threads: dict[str, list[tuple[list[str], int]]] = defaultdict(list)
    for line in path.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        name, *frames = m["stack"].split(";")
        threads[f"{name} {m['tid']}"].append((frames, int(m["count"])))
    return threads


def _short(frame: str) -> str:
    """``func (path/to/file.py:12)`` → ``func (file.py:12)``."""
    return re.sub(r"\(([^()]*/)?([^/()]+)\)$", r"(\2)", frame)


def summarise(path: Path, top: int) -> str:
    threads = read(path)
    total = sum(n for stacks in threads.values() for _, n in stacks) or 1
    out = [f"== {path.name}: {total} samples"]
    for thread, stacks in sorted(threads.items(), key=lambda kv: -sum(n for _, n in kv[1])):
        samples = sum(n for _, n in stacks)
        if samples / total < 0.01:
            continue
        own: Counter = Counter()
        inclusive: Counter = Counter()
        for frames, n in stacks:
            if frames:
                own[_short(frames[-1])] += n
            for frame in {_short(f) for f in frames}:
                inclusive[frame] += n
        out.append(f"-- {thread}: {samples} samples ({100 * samples / total:.1f}%)")
        out.append("   self:      " + "\n              ".join(f"{100 * n / samples:5.1f}% {f}"
                                                              for f, n in own.most_common(top)))
        out.append("   inclusive: " + "\n              ".join(f"{100 * n / samples:5.1f}% {f}"
                                                              for f, n in inclusive.most_common(top)))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    for path in args.files:
        print(summarise(path, args.top))


if __name__ == "__main__":
    main()
