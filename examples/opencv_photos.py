"""Lay out OpenCV's sample photographs as a `folder:` dataset of real multi-view pairs.

OpenCV's sample data (Debian/Ubuntu package `opencv-doc`, folder
`/usr/share/doc/opencv-doc/examples/data`, or `samples/data` of an OpenCV source
checkout) holds real photographs of one scene or object from two or more viewpoints:
a box alone and in a cluttered scene, the graffiti wall and the aerial image from two
viewpoints (the Mikolajczyk affine sequences), Leuven under two exposures, stereo pairs,
optical-flow frame pairs and a calibration chessboard. This script copies them into
`OUT/<group>/<file>`, one folder per scene, so that

    bench run -m he-wgc -d folder:OUT

retrieves, for every photograph, the other views of the same scene among them.

    apt-get download opencv-doc && dpkg -x opencv-doc_*.deb /tmp/ocv
    python examples/opencv_photos.py /tmp/ocv/usr/share/doc/opencv-doc/examples/data OUT
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

GROUPS: dict[str, tuple[str, ...]] = {
    "box": ("box.png", "box_in_scene.png"),
    "graffiti": ("graf1.png", "graf3.png"),
    "aerial": ("aero1.jpg", "aero3.jpg"),
    "leuven": ("leuvenA.jpg", "leuvenB.jpg"),
    "aloe": ("aloeL.jpg", "aloeR.jpg"),
    "stereo-scene": ("left.jpg", "right.jpg"),
    "basketball": ("basketball1.png", "basketball2.png"),
    "rubberwhale": ("rubberwhale1.png", "rubberwhale2.png"),
    "chessboard": ("left01.jpg", "left02.jpg", "right01.jpg"),
}
"""Scene -> its photographs in OpenCV's sample data."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="OpenCV's sample data folder")
    ap.add_argument("out", type=Path, help="folder to create (one subfolder per scene)")
    args = ap.parse_args()
    missing = [f"{args.data / f}" for files in GROUPS.values() for f in files
               if not (args.data / f).is_file()]
    if missing:
        print("missing sample photographs:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    for group, files in GROUPS.items():
        (args.out / group).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(args.data / f, args.out / group / f)
    n = sum(len(f) for f in GROUPS.values())
    print(f"{n} photographs of {len(GROUPS)} scenes in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
