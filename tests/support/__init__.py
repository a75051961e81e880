"""Helpers shared by the test modules and the job scripts: generated data (``data``), the
single-process reference fits (``reference``) and the runner of job scripts (``jobs``)."""
