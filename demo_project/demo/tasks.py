"""The demo's tasks: slow enough (a second or two) to watch their states change."""

from __future__ import annotations

import hashlib
import random
import time

from django_tasks import get_run_logger, task, unmapped


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


@task(tags={"pipelines"})
def make_thumbnail(image_id: int, size: int) -> dict[str, int]:
    """One step of the gallery pipeline: run on the worker's task runner by ``.map()``."""
    time.sleep(0.3 + random.random() * 0.4)
    return {"image": image_id, "size": size, "bytes": size * size // 8 + image_id}


@task(tags={"pipelines"})
def contact_sheet(thumbnails: list[dict[str, int]]) -> dict[str, int]:
    """Gathers the thumbnails: its upstream runs are every ``make_thumbnail`` run."""
    time.sleep(0.2)
    return {"images": len(thumbnails), "bytes": sum(t["bytes"] for t in thumbnails)}


@task(tags={"pipelines"}, task_run_name="gallery-{images}")
def build_gallery(images: int = 6) -> dict[str, int]:
    """A background run that fans out with ``.map()`` and gathers with a dependent run."""
    logger = get_run_logger()
    thumbnails = make_thumbnail.map(range(images), size=unmapped(128))
    logger.info("submitted %d thumbnails", images)
    sheet = contact_sheet.submit(thumbnails)  # waits for every thumbnail, gets their results
    result: dict[str, int] = sheet.result()
    logger.info("contact sheet of %d bytes", result["bytes"])
    return result


@task(tags={"periodic"})
def tidy_up() -> dict[str, int]:
    """A periodic task: every 30 seconds, whatever number of workers run (one run per tick).
    Its schedule is in the settings (DJANGO_TASKS["SCHEDULES"]): the test suite, which
    installs this app with settings of its own, does not tick it."""
    from django_tasks.models import TaskRun

    finished = TaskRun.objects.filter(state_type__in=["COMPLETED", "FAILED"]).count()
    get_run_logger().info("%d finished runs so far", finished)
    return {"finished_runs": finished}


@task(rate_limit="12/m", tags={"partners"})
def call_partner_api() -> str:
    """A rate-limited task: enqueue ten at once and watch them start five seconds apart
    (AwaitingRateLimit meanwhile), however many workers run."""
    return "called"
