"""Job queues on Redis (SAQ): priority, batch and scheduled queries, with signed callbacks."""
