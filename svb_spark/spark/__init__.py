"""Everything that talks to Spark: the barrier task, the broadcast mode, the training frame's
contract, the input pass, session facts, scoring, persistence and checkpoint I/O."""
