"""The one worker runtime every deployable runs its background work on: paced loops, timers, the table of
workers a process runs (the Kafka workers are `PartitionOrderedConsumer.run`, the same shape), the coalescer
(`batcher.Batcher` on asyncio over the rules of `coalescing.Coalescer`, which the group commit and the simulation
run too), and the partitions' sliding window (`keyed_window.KeyedWindow`, also run by the simulation)."""
