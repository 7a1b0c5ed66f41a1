"""The crash-and-fault suite (issue 19): real processes attacked while they work, then the invariants judged.
`make chaos` runs every scenario (`python -m tests.chaos`); tests/chaos/test_chaos.py runs a short fixed-seed part of
it inside `make test`."""
