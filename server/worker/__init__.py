"""The worker: owns the generator and its device and runs the rooms' engine jobs on its own thread."""
