"""CNN feature extraction: the full pipeline (JPEG files on disk -> features, decoding and
resizing in DataLoader workers) against the bare forward pass on pre-decoded tensors, for
vgg16 and efficientnet-lite0 in fp32 and bf16, plus the agreement of bf16 with fp32
features (mean cosine similarity).

Run: python benchmarks/bench_cnn.py [--images 64] [--workers 2] [--device cpu] [--repeats 3]

vgg16 runs with random weights unless its ImageNet file is in torchvision's cache: the
timings do not depend on the weights, but its cosine figure is only indicative then.
efficientnet-lite0 uses its real ImageNet weights. Images are the demo set's JPEGs.
Medians of `--repeats` runs, all in this one process.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from irbench.datasets import load
from irbench.methods.cnn.backbones import WeightsError, load_backbone
from irbench.methods.cnn.extract import Resize, autocast, batches, extract, prepare


def _net(name: str):
    try:
        return load_backbone(name, "imagenet"), "imagenet"
    except WeightsError:
        return load_backbone(name, "none"), "random"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    ds = load("demo")
    paths = [str(im.path) for im in ds.database][: args.images]
    items = [(p, None) for p in paths]
    resize = Resize("square", 224)
    decoded = torch.cat([b for _, b in batches(items, resize, batch_size=len(items),
                                                 workers=1)]).float()
    print(f"{len(paths)} demo JPEGs, 224 x 224, batch {args.batch_size}, {args.workers} "
          f"loader workers, device {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; medians of {args.repeats}")
    print(f"{'backbone':<19}{'weights':<9}{'prec':<6}{'pipeline img/s':>15}"
          f"{'forward img/s':>15}{'ratio':>8}{'cos(fp32,bf16)':>16}")
    for name in ("vgg16", "efficientnet-lite0"):
        net, weights = _net(name)
        net = prepare(net, args.device, channels_last=True)
        feats = {}
        for precision in ("fp32", "bf16"):
            def describe(x, net=net):
                return net.penultimate(x)

            def forward(net=net, precision=precision):
                dev = torch.device(args.device)
                with torch.inference_mode(), autocast(dev, precision):
                    for i in range(0, len(decoded), args.batch_size):
                        x = decoded[i:i + args.batch_size].to(dev)
                        x = x.contiguous(memory_format=torch.channels_last)
                        describe(x).float().cpu()

            def pipeline(precision=precision, describe=describe, net=net):
                return extract(net, describe, items, resize, batch_size=args.batch_size,
                               workers=args.workers, device=args.device,
                               precision=precision, channels_last=True)

            forward()  # warm-up
            feats[precision] = pipeline()
            t_fwd, t_pipe = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                forward()
                t_fwd.append(time.perf_counter() - start)
                start = time.perf_counter()
                pipeline()
                t_pipe.append(time.perf_counter() - start)
            fwd = len(paths) / statistics.median(t_fwd)
            pipe = len(paths) / statistics.median(t_pipe)
            cos = ""
            if precision == "bf16":
                a, b = feats["fp32"], feats["bf16"]
                c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
                cos = f"{float(c.mean()):.4f}"
            print(f"{name:<19}{weights:<9}{precision:<6}{pipe:>15.1f}{fwd:>15.1f}"
                  f"{pipe / fwd:>8.2f}{cos:>16}")
        print(f"{name}: bf16 speed-up of the forward pass and of the pipeline: see the "
              "rows above (bf16 / fp32)")


if __name__ == "__main__":
    main()
