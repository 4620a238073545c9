"""The runner's core, shared by both launchers: spec, protocol, ledger, dispatcher, settle, SQS."""
