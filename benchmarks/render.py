"""Speed of the pure-PyTorch renderer on CPU: forward and forward+backward milliseconds.

    python benchmarks/render.py [--threads 1] [--repeat 30] [--shading vertex|pixel] [--antialias]
                                [--json out.json]

The mesh is face-sized and face-shaped: a 90 x 90 grid (8,100 vertices, 15,842 triangles) bent
onto an ellipsoidal cap 180 x 220 x 90 mm, posed 500 mm in front of a camera whose focal length
makes it cover about half the frame, per-vertex albedo and SH lighting, with and without the
specular lobe. "Forward" is :class:`facenet3d.render.Renderer` under ``torch.no_grad``
(rasterize, interpolate, shading); "forward+backward" adds a masked L2 loss to a target image and
its backward pass to the vertices, albedo and lighting. Each figure is the median (and minimum)
of ``--repeat`` runs after warm-up. The machine is shared, so medians move: run it a few times,
and compare ``--threads 1`` with ``--threads 2`` (many small operations, so a second thread that
has to wait for a busy core can cost more than it gives). Budget (design brief): forward+backward
<= 15 ms at 224 x 224, batch 1, SH shading, on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from timing import timed  # noqa: E402  (benchmarks/timing.py)

from facenet3d.render import PinholeCamera, Renderer, sh_directional, sh_uniform  # noqa: E402

CONFIGS = ((224, 1, False), (224, 1, True), (224, 16, False), (512, 1, False))  # (size, batch, specular)

def face_like_mesh(n: int = 90) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n * n, 3)`` mm vertices of an ellipsoidal cap around the origin and its triangles."""
    s, t = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    depth = torch.sqrt((1.6 - s * s - t * t).clamp_min(0.0))
    vertices = torch.stack([s * 90.0, -t * 110.0, depth * 70.0 - 60.0], -1).reshape(-1, 3)
    i = torch.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).reshape(-1)
    # Counter-clockwise seen from +z.
    triangles = torch.cat([torch.stack([a, a + 1, a + n], 1), torch.stack([a + 1, a + n + 1, a + n], 1)])
    return vertices, triangles


def scene(size: int, batch: int):
    vertices, triangles = face_like_mesh()
    vertices = vertices + torch.tensor([0.0, 0.0, -500.0])
    camera = PinholeCamera.create(focal=size * 1.9, image_size=(size, size))
    sh = sh_uniform(0.6, batch) + sh_directional(torch.tensor([[0.3, 0.4, 1.0]]), torch.tensor([[0.5, 0.5, 0.5]]))
    albedo = torch.rand(batch, vertices.shape[0], 3)
    specular = torch.full((batch, 3), 0.2)
    roughness = torch.full((batch, 1), 0.4)
    target = torch.rand(batch, size, size, 3)
    return vertices.expand(batch, -1, -1).contiguous(), triangles, camera, sh, albedo, specular, roughness, target


def bench(size: int, batch: int, specular_on: bool, repeat: int, shading: str, antialias: bool) -> dict:
    vertices, triangles, camera, sh, albedo, specular, roughness, target = scene(size, batch)
    if not specular_on:
        specular = roughness = None
    renderer = Renderer(triangles, shading=shading, antialias=antialias)
    leaves = [vertices.clone().requires_grad_(), albedo.clone().requires_grad_(), sh.clone().requires_grad_()]

    def forward():
        with torch.no_grad():
            renderer(vertices, camera, sh, albedo, specular, roughness)

    def forward_backward():
        out = renderer(leaves[0], camera, leaves[2], leaves[1], specular, roughness)
        loss = ((out.image - target) ** 2 * out.mask).mean()
        loss.backward()
        for leaf in leaves:
            leaf.grad = None

    with torch.no_grad():
        coverage = renderer(vertices, camera, sh, albedo).mask.mean().item()
    fwd_med, fwd_min, fwd_cpu = timed(forward, repeat, warmup=3)
    fb_med, fb_min, fb_cpu = timed(forward_backward, repeat, warmup=3)
    return {"resolution": size, "batch": batch, "specular": specular_on, "coverage": round(coverage, 3),
            "forward_ms": round(fwd_med, 2), "forward_min_ms": round(fwd_min, 2), "forward_cpu_ms": round(fwd_cpu, 2),
            "forward_backward_ms": round(fb_med, 2), "forward_backward_min_ms": round(fb_min, 2),
            "forward_backward_cpu_ms": round(fb_cpu, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--shading", choices=("vertex", "pixel"), default="vertex")
    parser.add_argument("--antialias", action="store_true", help="antialias silhouettes (off by default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(f"threads={torch.get_num_threads()} shading={args.shading} antialias={args.antialias}")
    print("wall-clock median (minimum) [median process CPU time], milliseconds")
    print(f"{'size':>5} {'batch':>5} {'shading':>8} {'cover':>6} {'forward':>24} {'forward+backward':>26}")
    for size, batch, specular_on in CONFIGS:
        r = bench(size, batch, specular_on, args.repeat if batch == 1 else max(3, args.repeat // 5),
                  args.shading, args.antialias)
        rows.append(r)
        what = "sh+spec" if specular_on else "sh"
        print(f"{size:>5} {batch:>5} {what:>8} {r['coverage']:>6} {r['forward_ms']:>8} ({r['forward_min_ms']:>6}) "
              f"[{r['forward_cpu_ms']:>6}] {r['forward_backward_ms']:>9} ({r['forward_backward_min_ms']:>6}) "
              f"[{r['forward_backward_cpu_ms']:>6}]", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"threads": torch.get_num_threads(), "shading": args.shading,
                                         "antialias": args.antialias, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
