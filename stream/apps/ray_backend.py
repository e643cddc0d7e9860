"""`livestems separate --ray`: the library's files on a Ray cluster, one model per actor.

Each actor is a process on some node that loads the model once and runs
:func:`~livestems.stream.apps.library.process_task` (the very function the local workers run) on one
file at a time, writing the same layout straight to the output path; the driver only plans,
hands out tasks and draws the progress bar. Paths are used as given, so inputs and the output
folder must be on storage that every node mounts at the same path (NFS, a cluster file system,
or an object store mounted with s3fs/gcsfuse); docs/SCALE.md says how. A failing file comes
back as a failed outcome like on one machine; an actor that dies (out of memory, node lost)
fails its file with the reason and is replaced.

``ray`` is an optional dependency: ``pip install 'livestems[ray]'``.
"""

from __future__ import annotations

from typing import Iterator

from livestems.stream.errors import ToolMissingError
from .library import Options, Outcome, Task, process_task

__all__ = ["ray_backend", "SeparatorActor"]


def _ray():
    try:
        import ray
    except ImportError:
        raise ToolMissingError("ray", needed_for="--ray",
                               fix="pip install 'livestems[ray]' (on the driver and on every "
                                   "node), or run without --ray") from None
    return ray


class SeparatorActor:
    """Holds one loaded model; ``run(task, options) -> Outcome`` separates one file."""

    def __init__(self, model: str | None, threads: int):
        from .library import load_model

        load_model(model, threads)

    def run(self, task: Task, options: Options) -> Outcome:
        return process_task(task, options)


def ray_backend(address: str):
    """A backend for :func:`~livestems.stream.apps.library.run_library` on the Ray cluster at
    ``address`` ('auto': the cluster this machine is part of, else a local instance)."""
    ray = _ray()

    def run(todo: list[Task], options: Options, workers: int | None) -> Iterator[Outcome]:
        if not ray.is_initialized():
            if address == "auto":  # the cluster this machine is in, or a local instance
                ray.init(log_to_driver=False, include_dashboard=False)
            else:  # an existing cluster's settings are its own: only connect
                ray.init(address=address, log_to_driver=False)
        if not todo:
            return
        cpus = int(ray.cluster_resources().get("CPU", 1))
        threads = max(1, options.threads)
        n = workers or max(1, cpus // threads)
        n = max(1, min(n, len(todo)))
        remote = ray.remote(num_cpus=threads, max_restarts=-1)(SeparatorActor)
        actors = [remote.remote(options.model, threads) for _ in range(n)]
        queue = list(reversed(todo))
        running = {}  # object ref -> (actor, task)

        def feed(actor):
            if queue:
                task = queue.pop()
                running[actor.run.remote(task, options)] = (actor, task)

        for a in actors:
            feed(a)
        try:
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                ref = ready[0]
                actor, task = running.pop(ref)
                try:
                    out = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the actor died: report, go on
                    reason = getattr(exc, "message", None) or str(exc).splitlines()[0]
                    out = Outcome(task.input, "failed", exit_code=1,
                                  error=f"the Ray worker running it died ({type(exc).__name__}:"
                                        f" {reason}); the run went on without it")
                feed(actor)
                yield out
        finally:  # interrupted, or done: stop the actors (a file in flight is abandoned; its
            # hidden temporary folder is removed by the next run that writes that track)
            for a in actors:
                try:
                    ray.kill(a)
                except Exception:  # noqa: BLE001 - already gone
                    pass

    return run

