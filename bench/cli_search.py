"""One-query `imgsearch search` processes on an indexed data dir, cold and warm, for one or more
binaries side by side (an A/B in one run, so the machine's noise hits both alike).

Cold: the data dir's files are dropped from the page cache first (posix_fadvise DONTNEED on each
file; the binary, ONNX Runtime and the model stay cached, as they would for a user who searches
again). Warm: the same search again straight after. Rounds alternate the binaries.

Usage: python3 bench/cli_search.py DATA_DIR MODEL_DIR BIN [BIN ...] [--rounds R]
(bench/scale.sh leaves a data dir behind with SCALE_WORK=DIR: DIR/run/data)
"""

import os
import statistics
import sys

from scale import timed


def evict(root):
    for d, _, files in os.walk(root):
        for f in files:
            try:
                fd = os.open(os.path.join(d, f), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def search(binary, data, model):
    return timed([binary, "search", "a red circle", "--data-dir", data, "--model", model])[0]


def main(args):
    rounds = 5
    if "--rounds" in args:
        i = args.index("--rounds")
        rounds = int(args[i + 1])
        del args[i : i + 2]
    data, model, binaries = args[0], args[1], args[2:]
    cold = {b: [] for b in binaries}
    warm = {b: [] for b in binaries}
    for _ in range(rounds):
        for b in binaries:
            evict(data)
            cold[b].append(search(b, data, model))
            warm[b].append(search(b, data, model))
    print(f"{rounds} rounds, `imgsearch search` in seconds (median / best); ratio: median against the first binary")
    print(f"{'binary':<40} {'cold':>13} {'warm':>13} {'cold x':>7} {'warm x':>7}")
    c0, w0 = statistics.median(cold[binaries[0]]), statistics.median(warm[binaries[0]])
    for b in binaries:
        c, w = statistics.median(cold[b]), statistics.median(warm[b])
        print(f"{b[-40:]:<40} {c:>6.3f}/{min(cold[b]):<6.3f} {w:>6.3f}/{min(warm[b]):<6.3f} {c / c0:>7.2f} {w / w0:>7.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
