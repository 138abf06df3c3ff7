"""``facenet3d preprocess``: build the training-photo cache (see :mod:`facenet3d.landmarks.cache`)."""

from __future__ import annotations

import argparse

#: Exit statuses: every photo cached / some failed (listed, the rest cached) / usage error /
#: interrupted (finished shards kept).
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preprocess", help="detect, align and cache training photos",
        description="Detect faces (MediaPipe), align them to canonical crops and store crops, 478/68 "
                    "landmarks, face/skin masks and transforms as memory-mappable arrays in CACHE. "
                    "Re-running skips the photos already cached; failed photos are listed in "
                    "CACHE/manifest.json. Exit status: 0 all cached, 1 some failed, 2 usage error.")
    p.add_argument("inputs", nargs="+", metavar="DIR_OR_FILE",
                   help="photo files or folders (searched recursively)")
    p.add_argument("-o", "--output", required=True, metavar="CACHE", help="cache folder")
    p.add_argument("--size", type=int, default=224, help="crop side in pixels (default 224)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--shard-size", type=int, default=256, help="photos per shard file (default 256)")
    p.add_argument("--max-faces", type=int, default=4, help="faces searched per photo; the largest is cached")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facenet3d.errors import PhotoInputError
    from facenet3d.landmarks.cache import preprocess

    if args.workers is not None and args.workers < 1 or args.shard_size < 1 or args.max_faces < 1:
        print("error: --workers, --shard-size and --max-faces must be positive")
        return EXIT_USAGE
    try:
        report = preprocess(args.inputs, args.output, size=args.size, workers=args.workers,
                            shard_size=args.shard_size, progress=not args.no_progress,
                            detector_kwargs={"max_faces": args.max_faces})
    except PhotoInputError as e:  # missing photos, or a cache folder it cannot use (CacheUsageError)
        print(f"error: {e}")
        return EXIT_USAGE
    for f in report.failed:
        print(f"failed: {f['error']}")
    print(f"{args.output}: {report.cached} photos cached, {report.skipped} already there, "
          f"{len(report.failed)} failed")
    if report.interrupted:
        print("interrupted: finished photos are kept; run the same command again to continue")
        return EXIT_INTERRUPTED
    return EXIT_SOME_FAILED if report.failed else EXIT_OK
