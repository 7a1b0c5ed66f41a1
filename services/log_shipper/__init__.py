"""log-shipper: a development and test tool that follows the processes' JSON log files and bulk-indexes them into
OpenSearch. A cluster runs Fluent Bit instead (charts/payments, `logs.enabled`); see docs/operations.md, Logs."""
