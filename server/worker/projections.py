"""Projection jobs (real images): uploads and blends, stepped like drags.

PROJECT jobs (a room projecting an upload or a blend) are stepped one optimisation step per tick,
all projecting rooms in one batched pass (:meth:`~server.worker.projector.Projector.step_many`),
each frame streamed with its PSNR and loss. The session is created from the room's
:class:`~server.core.state.Task` (the target PNG from the store, the current latent for a blend);
the FINISH job commits the latent of the last frame. A failed projection commits nothing (the
room shows its image again). An ``optimize`` upload may end with pivotal tuning of a private
generator copy (``pti.py``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import numpy as np
import torch

from server.core.jobs import EngineJob, FrameResult
from server.core.state import Task, TaskKind
from server.engine.generator import Generator
from server.engine.media import decode_image
from server.engine.session import StepResult
from server.storage.store import StoreError
from server.worker.base import WorkerBase
from server.worker.media import Trajectory, TrajectoryItem
from server.worker.modes import step_isolated
from server.worker.projector import BlendSource, ProjectionError, ProjectionSession
from server.worker.state import EngineError, Outcome, ProjectionState

log = logging.getLogger(__name__)


class ProjectionJobs(WorkerBase):
    """PROJECT and FINISH jobs of projections (engine thread)."""

    def _target(self, key: str, res: int) -> np.ndarray:
        """A stored upload's target picture, uint8 [H, W, 3] at the model's resolution ``res``."""
        try:
            data = self.manager.store.get_upload(key)
        except StoreError as e:
            raise EngineError(str(e)) from None
        if data is None:
            raise EngineError(f"upload {key[:12]}... is missing from the store")
        img = np.array(decode_image(data))  # a writable copy (torch.from_numpy wants one)
        if img.shape[:2] != (res, res):
            raise EngineError(f"the upload is {img.shape[1]}x{img.shape[0]}; this model needs {res}")
        return img

    def _projection(self, job: EngineJob) -> ProjectionState:
        """The room's projection session for this job's run, created at its first step."""
        ps = self._projections.get(job.room)
        if ps is not None and ps.run == job.drag:
            return ps
        task = job.task
        assert task is not None
        model = self._model(job.image)
        if task.kind is TaskKind.UPLOAD:
            if task.target is None:
                raise EngineError("an upload projection without a target")
            pti = self._pti_allowed(job.room, task.method)
            target = self._target(task.target, model.resolution)
            if pti:
                session = model.projector.upload_session(
                    target, task.method, task.max_steps, pti_steps=self.pti_steps
                )
            else:
                session = model.projector.upload_session(target, task.method, task.max_steps)
        else:
            pti, session = False, self._blend(job, task)
        ps = self._projections[job.room] = ProjectionState(job.drag, session, pti=pti, model=model.name)
        self._trajectories.setdefault(job.room, Trajectory(self.trajectory_frames)).reset(job.drag)
        return ps

    def _pti_allowed(self, room: str, method: str) -> bool:
        """Whether this room's upload gets pivotal tuning: on, method optimize, and the room holds
        a tuned copy already or fewer than ``pti_max_rooms`` rooms do."""
        if self.pti_steps <= 0 or method != "optimize":
            return False
        others = self.tuned_rooms - {room}
        if len(others) >= self.pti_max_rooms:
            log.info(
                "room %s: upload projected without pivotal tuning: %d room(s) hold a tuned generator "
                "(pti_max_rooms %d)",
                room,
                len(others),
                self.pti_max_rooms,
            )
            return False
        return True

    def _keep_tuned(self, room: str, key: str, ps: ProjectionState) -> None:
        """After a tuned projection's commit: the room's tuned copy, for that latent key (it
        replaces the room's earlier one), without gradients or optimiser state."""
        tuned = getattr(ps.session, "generator", None)
        if not ps.pti or not isinstance(tuned, Generator) or tuned is self.models.get(ps.model).G:
            return  # stopped before pivotal tuning began
        self._tuned.keep(room, key, tuned)

    def _blend(self, job: EngineJob, task: Task) -> ProjectionSession:
        model = self._model(job.image)
        res = model.resolution
        region = None if task.region is None else task.region.flexible_region(res, res)
        if region is None:
            raise EngineError("the blend region is empty")
        if task.target is not None:
            source = BlendSource(target=self._target(task.target, res))
        else:
            source = BlendSource(seed=task.source_seed, truncation=task.source_truncation)
        w_base = self._room_ws(self._state(job.room), job.image)
        return model.projector.blend_session(w_base, source, region, task.max_steps)

    def _project_all(self, jobs: list[EngineJob]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        ready: list[tuple[EngineJob, ProjectionState]] = []
        for job in jobs:
            try:
                ready.append((job, self._projection(job)))
            except ProjectionError as e:
                outcomes.append(self._failed(job, EngineError(str(e))))
            except Exception as e:
                outcomes.append(self._failed(job, e))
        by_model: dict[str, list[tuple[EngineJob, ProjectionState]]] = {}
        for job, ps in ready:
            by_model.setdefault(ps.model, []).append((job, ps))
        for name, items in by_model.items():  # one batch per model, never mixed
            try:
                step_many = self.models.get(name).projector.step_many
            except Exception as e:
                outcomes += [self._failed(job, e) for job, _ in items]
                continue
            outcomes += self._project_batch(step_many, items)
        return outcomes

    def _project_batch(self, step_many, ready: list[tuple[EngineJob, ProjectionState]]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        t0 = self._clock()
        sessions = [ps.session for _, ps in ready]
        latents = [s.latent().detach().clone() for s in sessions]  # what this step's frames show
        results = step_isolated(step_many, sessions)
        self._measure(("project", ""), t0, len(ready))
        for (job, ps), res, before in zip(ready, results, latents, strict=True):
            if isinstance(res, BaseException):
                outcomes.append(self._failed(job, res))
                continue
            outcomes.append(
                self._guard(job, lambda j, ps=ps, res=res, before=before: self._projected(j, ps, res, before))
            )
        return outcomes

    def _projected(
        self, job: EngineJob, ps: ProjectionState, res: StepResult, before: torch.Tensor
    ) -> Outcome:
        jpeg = self._jpeg(res.frame)
        # a step's frame shows the latent before its update, the last step's the final latent
        ps.latent = (ps.session.latent() if res.done else before).detach().to("cpu", torch.float32)
        ps.steps += 1
        traj = self._trajectories.get(job.room)
        if traj is not None and traj.drag == job.drag:
            traj.add(TrajectoryItem(jpeg, [], []))
        self.stats.steps += 1
        psnr = float(ps.session.psnr())
        done = (res.reason or "max_steps") if res.done else None
        if done not in (None, "converged", "max_steps"):
            done = "max_steps"
        frame = FrameResult(
            jpeg, {}, psnr=min(psnr, 99.0) if math.isfinite(psnr) else 99.0, loss=float(res.loss), done=done
        )
        return Outcome(job, frame, steps=ps.steps)

    def _finish_projection(self, job: EngineJob) -> Outcome:
        """Store the latent of the projection's last frame (None: it never stepped)."""
        ps = self._projections.pop(job.room, None)
        if ps is None or ps.run != job.drag or ps.latent is None:
            return Outcome(job)
        key, failed = self.models.get(ps.model).latents.put(ps.latent)
        self._keep_tuned(job.room, key, ps)
        st = self._state(job.room)  # the room's next image: keep its W+ at hand
        image = replace(
            job.image, seed=job.image.seed if job.task and job.task.kind is TaskKind.BLEND else None
        )
        st.image, st.ws = replace(image, latent=key), ps.latent.to(self.device)
        return Outcome(job, latent=key, storage_failed=failed, steps=ps.steps)
