"""What the transports share: waiting for a step's messages to arrive."""

from __future__ import annotations

from svb_spark.core.exchange import ExchangeTimeoutError


def wait_for_messages(
    arrived, mailbox: dict, step: int, senders: list[int], reader: int, timeout: float
) -> None:
    """Wait (holding ``arrived``) until ``mailbox`` has (step, sender) for every sender.

    Raises ExchangeTimeoutError naming the reader, the step and the missing senders.
    """
    keys = [(step, sender) for sender in senders]
    if not arrived.wait_for(lambda: all(k in mailbox for k in keys), timeout=timeout):
        missing = [sender for _, sender in keys if (step, sender) not in mailbox]
        raise ExchangeTimeoutError(
            f"worker {reader} waited {timeout:.0f} s for step {step} from workers {missing}; "
            "a peer died or stalled (see exchangeTimeout)"
        )
