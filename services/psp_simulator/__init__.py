"""The PSP simulator (dev and test only): an idempotent charge API with the original's scenarios and a ledger."""
