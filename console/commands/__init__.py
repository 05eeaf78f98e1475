"""Headless verbs, one module per family. Each module exposes `register(subparsers)`.

Nothing here imports textual: these paths must stay fast and usable without a terminal UI.
"""

COMMAND_MODULES = (
    "console.commands.registry_cmds",
    "console.commands.deploy_cmds",
    "console.commands.rollout_cmds",
    "console.commands.serve_cmds",
    "console.commands.status_cmds",
    "console.commands.target_cmds",
    "console.commands.job_cmds",
    "console.commands.compress_cmds",
    "console.commands.telemetry_cmds",
    "console.commands.alert_cmds",
)
