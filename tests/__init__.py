"""The test suite: test modules here, their helpers in ``tests.support``, and the job scripts
that some tests run in processes of their own in ``tests.jobs``."""
