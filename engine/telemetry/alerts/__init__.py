"""Alerts: deck.toml [[alerts]] rules (engine.alert_settings) evaluated over each telemetry
snapshot by the process that samples.

- machine.py: the pure fire / flap / resolve state machine (clock given by the caller);
- subjects.py: GPUs, endpoints, host, jobs and the rollout as the fields rules read;
- service.py: AlertService, one tick's evaluation, the log and the sinks;
- sinks.py: webhook and command deliveries on background threads;
- log.py: <home>/alerts/events.jsonl, append-only;
- monitor.py: `modeldeck monitor`, the daemon that samples and evaluates with no one watching.
Importing this package imports nothing heavy.
"""
