"""The demo's tasks: slow enough (a second or two) to watch their states change."""

from __future__ import annotations

import hashlib
import random
import time

from django_tasks import task


@task(queue="default", tags={"reports"})
def send_report(email: str, pages: int = 3) -> dict[str, object]:
    """Build a report of ``pages`` pages and "send" it to ``email``."""
    digest = hashlib.sha256()
    for page in range(pages):
        time.sleep(0.4)
        digest.update(f"{email}:{page}".encode())
    return {"to": email, "pages": pages, "checksum": digest.hexdigest()[:12]}


@task(tags={"images"})
def resize_image(width: int, height: int, scale: float = 0.5) -> dict[str, int]:
    """Downscale a generated image by averaging pixel blocks (pure Python, CPU-bound)."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    rng = random.Random(width * height)
    pixels = [[rng.randrange(256) for _ in range(width)] for _ in range(height)]
    step = max(1, round(1 / scale))
    out = [
        [
            sum(pixels[y][x : x + step]) // len(pixels[y][x : x + step])
            for x in range(0, width, step)
        ]
        for y in range(0, height, step)
    ]
    time.sleep(1)
    return {"width": len(out[0]), "height": len(out)}
