"""Log shipping: follow the processes' JSON log lines and bulk-index them into OpenSearch (the development and test
stand-in for Fluent Bit, see docs/operations.md, Logs)."""
