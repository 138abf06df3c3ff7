"""Speed of the pure-PyTorch renderer on CPU: forward and forward+backward milliseconds.

    python benchmarks/render.py [--threads 1] [--repeat 30] [--shading vertex|pixel] [--antialias]
                                [--json out.json]

First the public primitives alone: a closed 10,242-vertex icosphere (20,480 triangles, half of
them facing away) filling about half of a 224 x 224 image, forward + backward of a squared error
of ``interpolate(colour, rasterize(pos, tri))`` to the clip positions and the colours, through
the public :func:`facenet3d.render.rasterize` + :func:`facenet3d.render.interpolate` and, in the
same process and interleaved, through the compact internal path they are built on
(``rasterize_fragments`` + ``interpolate_fragments``). Budget (issue 19): <= 15 ms on 2 cores.

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
import os
import sys
from pathlib import Path

# As facenet3d does on import: OpenMP threads that spin while waiting slow PyTorch down several
# times on a busy machine. It must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from timing import timed  # noqa: E402  (benchmarks/timing.py)

from facenet3d.render import PinholeCamera, Renderer, interpolate, rasterize, sh_directional, sh_uniform  # noqa: E402
from facenet3d.render.interpolate import interpolate_fragments  # noqa: E402
from facenet3d.render.rasterize import rasterize_fragments  # noqa: E402

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


def icosphere(subdivisions: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit icosphere: ``10 * 4^n + 2`` vertices (10,242 for n = 5), ``20 * 4^n`` triangles, outward winding."""
    t = (1 + 5 ** 0.5) / 2
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
             (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11),
             (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    for _ in range(subdivisions):
        midpoints: dict[tuple[int, int], int] = {}

        def midpoint(a: int, b: int, midpoints: dict[tuple[int, int], int] = midpoints) -> int:
            key = (min(a, b), max(a, b))
            if key not in midpoints:
                midpoints[key] = len(verts)
                verts.append(tuple((verts[a][k] + verts[b][k]) / 2 for k in range(3)))
            return midpoints[key]

        new_faces = []
        for a, b, c in faces:
            ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
            new_faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new_faces
    v = torch.tensor(verts, dtype=torch.float32)
    return v / v.norm(dim=-1, keepdim=True), torch.tensor(faces, dtype=torch.int64)


def bench_primitives(repeat: int, size: int = 224) -> dict:
    """Forward + backward through the public primitives and through the internal compact path,
    interleaved (alternating runs) so that both see the same machine load."""
    vertices, triangles = icosphere(5)
    g = torch.Generator().manual_seed(0)
    # Clip space of a sphere of radius 0.8 at distance 2.5 from a camera with a 45 degree view.
    cam = vertices * 0.8 + torch.tensor([0.0, 0.0, -2.5])
    f = 1 / torch.tan(torch.tensor(22.5).deg2rad())
    near, far = 0.1, 10.0
    clip = torch.stack([f * cam[:, 0], f * cam[:, 1], (far + near) / (near - far) * cam[:, 2]
                        + 2 * far * near / (near - far), -cam[:, 2]], -1)[None]
    colour = torch.rand(1, vertices.shape[0], 3, generator=g)
    target = torch.rand(1, size, size, 3, generator=g)
    pos, attr = clip.clone().requires_grad_(), colour.clone().requires_grad_()

    def public():
        image = interpolate(attr, rasterize(pos, triangles, (size, size)), triangles)
        ((image - target) ** 2).sum().backward()
        pos.grad = attr.grad = None

    def internal():
        _, fragments = rasterize_fragments(pos, triangles, (size, size))
        image = interpolate_fragments(attr, fragments, triangles)
        ((image - target) ** 2).sum().backward()
        pos.grad = attr.grad = None

    coverage = float((rasterize(clip, triangles, (size, size))[..., 3] > 0).float().mean())
    runs = {"public": [], "internal": []}
    for _ in range(repeat):
        for name, fn in (("public", public), ("internal", internal)):
            runs[name].append(timed(fn, 1, warmup=1 if not runs[name] else 0))
    out = {"vertices": vertices.shape[0], "triangles": triangles.shape[0], "resolution": size,
           "coverage": round(coverage, 3)}
    for name, rows in runs.items():
        walls = sorted(r[0] for r in rows)
        out[name] = {"median_ms": round(walls[len(walls) // 2], 2), "min_ms": round(walls[0], 2),
                     "cpu_ms": round(sorted(r[2] for r in rows)[len(rows) // 2], 2)}
    return out


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
    print(f"threads={torch.get_num_threads()} load average {os.getloadavg()[0]:.2f} (1 min)")
    prims = bench_primitives(args.repeat)
    print(f"primitives: {prims['vertices']}-vertex closed mesh ({prims['triangles']} triangles), "
          f"{prims['resolution']}^2, coverage {prims['coverage']}, forward+backward ms, median (min) [CPU]")
    for name in ("public", "internal"):
        r = prims[name]
        print(f"  {name:9s} rasterize + interpolate {r['median_ms']:>7} ({r['min_ms']:>6}) [{r['cpu_ms']:>6}]")
    print(f"renderer: shading={args.shading} antialias={args.antialias}")
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
        args.json.write_text(json.dumps({"threads": torch.get_num_threads(), "load": os.getloadavg()[0],
                                         "primitives": prims, "shading": args.shading,
                                         "antialias": args.antialias, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
