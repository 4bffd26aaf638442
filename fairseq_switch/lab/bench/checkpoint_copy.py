"""What the independent copies of a save (checkpoint_last, checkpoint_best) cost against hard links.

    python scripts/bench_checkpoint_copy.py ck/ref/checkpoint_1_12.pt      # a real checkpoint
    python scripts/bench_checkpoint_copy.py --size-gb 1 --dir /data/ck      # a made-up 1 GB file there

For each way of making one more name of a file, atomically (temporary name, fsync, rename, folder fsync),
as a save does: seconds (median of --repeats) and the bytes the file system's free space went down by.
`hard link` is what saves did before issue 27; `copy` is file_io.copy_file: a reflink where the file
system has one, else copy_file_range, else a plain copy (which one is printed). The source is in the
page cache (it was just written, as a save's numbered file is), so a plain copy measures writing.
"""

import argparse
import os
import statistics
import tempfile
import time
from typing import List, Optional

from fairseq_switch import file_io


def link_atomic(src: str, dst: str) -> None:
    """The hard link a save's copy used to be (file_io before issue 27)."""
    tmp = f"{dst}.link.tmp"
    os.link(src, tmp)
    os.replace(tmp, dst)
    file_io._fsync_dir(os.path.dirname(os.path.abspath(dst)))


def free_bytes(folder: str) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def measure(src: str, folder: str, repeats: int) -> dict:
    out = {}
    for name, make in (("hard link", link_atomic), ("copy", file_io.copy_file)):
        times, used = [], []
        for i in range(repeats):
            dst = os.path.join(folder, f"bench-copy-{i}.pt")
            before = free_bytes(folder)
            t0 = time.perf_counter()
            make(src, dst)
            times.append(time.perf_counter() - t0)
            used.append(before - free_bytes(folder))
            os.remove(dst)
        out[name] = (statistics.median(times), statistics.median(used))
    probe = os.path.join(folder, "bench-probe.pt")
    out["method"] = file_io.clone_or_copy(src, probe)
    os.remove(probe)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", nargs="?", help="a file to copy (default: a made-up file of --size-gb)")
    ap.add_argument("--size-gb", type=float, default=1.0, help="size of the made-up file (default 1)")
    ap.add_argument("--dir", help="folder for the copies (default: the checkpoint's, else a temporary one in /tmp); "
                                  "the file system is what is measured")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    folder = args.dir or (os.path.dirname(os.path.abspath(args.checkpoint)) if args.checkpoint else None)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        src = args.checkpoint
        if src is None:
            src = os.path.join(tmp, "made-up.pt")
            with open(src, "wb") as f:
                for _ in range(int(args.size_gb * 1024)):
                    f.write(os.urandom(1 << 20))
                os.fsync(f.fileno())
        res = measure(src, tmp, args.repeats)
    size = os.path.getsize(src) if args.checkpoint else int(args.size_gb * 1024) << 20
    print(f"{src if args.checkpoint else 'made-up file'}: {size / 2**20:.1f} MiB; copies by {res['method']} "
          f"(reflink: {'yes' if res['method'] == 'reflink' else 'no'} on this file system)")
    for name in ("hard link", "copy"):
        sec, used = res[name]
        print(f"  {name:9s}  {sec:8.3f} s   {used / 2**20:9.1f} MiB more used")
    sec = res["copy"][0] - res["hard link"][0]
    print(f"  a save with checkpoint_last and checkpoint_best copies: +{2 * sec:.3f} s, "
          f"+{2 * (res['copy'][1] - res['hard link'][1]) / 2**20:.1f} MiB on disk")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
