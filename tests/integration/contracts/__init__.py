"""Contract tests: each port's behavioural cases, written once and run against its fake and its real adapter.

A use-case test is only as true as the fake it runs on. Every module here parametrizes one fixture over
["fake", <real>]: the real adapter runs on the real service (Postgres, Redis, Kafka), the fake in memory, and both
must pass the same cases. Where the service keeps its own time (Redis TIME, Postgres now()), a case lets time pass
through the fixture (the fake's clock moves, the real one is polled until the server's clock has moved), never a
bare sleep.
"""
