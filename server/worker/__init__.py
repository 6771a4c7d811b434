"""The worker: owns the generator and its device and runs the rooms' engine jobs on its own thread.

``loop.py`` holds :class:`~server.worker.loop.Worker` (the tick loop); each kind of job has its
module: ``drags.py``, ``projections.py`` (with ``projector.py``, the engine's projection sessions,
and ``pti.py``, pivotal tuning copies) and ``renders.py`` (renders and downloads). ``modes.py``
holds the engine modes, ``latents.py`` each image's W+ and the latent cache, ``media.py`` frames
and the trajectory GIF, ``base.py`` and ``state.py`` what the job kinds share. Imports the core,
the engine and the storage; never the edge.
"""
