"""The one worker runtime every deployable runs its background work on: paced loops, timers, and the table of
workers a process runs (the Kafka workers are `PartitionOrderedConsumer.run`, the same shape)."""
