"""Job scripts that tests run in Python processes of their own (``python -m tests.jobs.NAME``,
through :func:`tests.support.jobs.run_job`): a process holds one SparkContext, and these need
another master or a driver of another size than the suite's shared session."""
